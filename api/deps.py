"""Shared dependencies: settings, the Temporal client, the intake, the database engine and the blob store.

They live on `app.state` (set up once in `api.main.create_app`'s lifespan) so tests can build
an app against their own Temporal server and database.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from temporalio.client import Client

from connectors.chat.sso import ChatSso
from connectors.notify.registry import Notifier
from signbridge.core.settings import Settings
from signbridge.intake import Intake
from store.blobs import BlobStore


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_client(request: Request) -> Client:
    return request.app.state.temporal  # type: ignore[no-any-return]


def get_engine_dep(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def get_intake(request: Request) -> Intake:
    return request.app.state.intake  # type: ignore[no-any-return]


def get_blobs(request: Request) -> BlobStore:
    return request.app.state.blobs  # type: ignore[no-any-return]


def get_ssos(request: Request) -> dict[str, ChatSso]:
    """The chat platforms whose sign-in is switched on (one-tap signing), by platform."""
    return getattr(request.app.state, "ssos", {})  # type: ignore[no-any-return]
def get_notifier(request: Request) -> Notifier:
    return request.app.state.notifier  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ClientDep = Annotated[Client, Depends(get_client)]
EngineDep = Annotated[Engine, Depends(get_engine_dep)]
IntakeDep = Annotated[Intake, Depends(get_intake)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
SsosDep = Annotated[dict[str, ChatSso], Depends(get_ssos)]
NotifierDep = Annotated[Notifier, Depends(get_notifier)]
