"""Pick the chat connectors from configuration; nothing else imports a specific platform.

Each platform module exposes `build(settings, http) -> connector | None` and returns None when
its secrets are not configured (a platform is enabled when its secrets are set).
"""

from __future__ import annotations

import importlib

import httpx

from connectors.chat.base import ChatConnector
from signbridge.core.settings import Settings

PLATFORM_MODULES = (
    "connectors.chat.webhook.client",
    "connectors.chat.feishu.client",
    "connectors.chat.slack.client",
    "connectors.chat.dingtalk.client",
    "connectors.chat.wecom.client",
)


def build_chats(settings: Settings, http: httpx.AsyncClient) -> dict[str, ChatConnector]:
    chats: dict[str, ChatConnector] = {}
    for name in PLATFORM_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that platform is not part of this build yet
                continue
            raise
        connector = module.build(settings, http)
        if connector is not None:
            chats[connector.platform] = connector
    return chats
