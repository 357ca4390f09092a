"""The chat platforms, one package each under `connectors/chat/<platform>/`.

Adding a platform means its folder and one name in `PLATFORMS`. Each package has
`client.py` with `build(settings, http) -> ChatConnector | None` (outbound; None while its
secrets are not set) and `inbound.py` with `ROUTES` (the public callback paths) and
`build(settings, engine, chat) -> Inbound | None`; a platform with a long connection also has
`stream.py` with `build(config...)` used by `signbridge chat-listener`; a platform whose users can
sign in to a signing link (one-tap signing) has `sso.py` with `build(settings, http, chat)`
returning its OAuth client (`connectors.chat.sso.ChatSso`) or None while it is switched off.
Nothing else imports a specific platform.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import httpx
from sqlalchemy.engine import Engine

from connectors.chat.base import ChatConnector
from connectors.chat.callback import Inbound, Route
from connectors.chat.sso import ChatSso
from signbridge.core.settings import Settings

PLATFORMS = ("webhook", "feishu", "slack", "dingtalk", "wecom")
SSO_PLATFORMS = ("feishu", "slack", "dingtalk", "wecom")  # OAuth sign-in; the webhook IM signs assertions


def _part(platform: str, part: str) -> ModuleType:
    return importlib.import_module(f"connectors.chat.{platform}.{part}")


def build_chats(settings: Settings, http: httpx.AsyncClient) -> dict[str, ChatConnector]:
    """The outbound connectors of every configured platform."""
    chats: dict[str, ChatConnector] = {}
    for platform in PLATFORMS:
        connector = _part(platform, "client").build(settings, http)
        if connector is not None:
            chats[platform] = connector
    return chats


def build_inbounds(settings: Settings, engine: Engine, chats: dict[str, ChatConnector]) -> dict[str, Inbound]:
    """The callback handlers of every configured platform (those that name people through their
    directory use the platform's connector for it)."""
    inbounds: dict[str, Inbound] = {}
    for platform in PLATFORMS:
        inbound = _part(platform, "inbound").build(settings, engine, chats.get(platform))
        if inbound is not None:
            inbounds[platform] = inbound
    return inbounds


def routes() -> list[tuple[str, Route]]:
    """(platform, route) for every public callback path, configured or not (404 until it is)."""
    return [(platform, route) for platform in PLATFORMS for route in _part(platform, "inbound").ROUTES]


def build_ssos(settings: Settings, http: httpx.AsyncClient, chats: dict[str, ChatConnector]) -> dict[str, ChatSso]:
    """The OAuth sign-in of every platform that has it switched on (`SIGNBRIDGE_<PLATFORM>_SSO_*`)."""
    ssos: dict[str, ChatSso] = {}
    for platform in SSO_PLATFORMS:
        sso = _part(platform, "sso").build(settings, http, chats.get(platform))
        if sso is not None:
            ssos[platform] = sso
    return ssos
