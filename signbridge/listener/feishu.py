"""Placeholder: the feishu long connection is being built (issue 3, item 7)."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from temporalio.client import Client

from signbridge.listener.inbox import Handler, Listener
from signbridge.settings import Settings


def build(settings: Settings, engine: Engine, client: Client) -> tuple[Listener, Handler] | None:
    return None
