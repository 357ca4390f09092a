"""Pick the chat connectors from configuration; nothing else imports a specific platform."""

from __future__ import annotations

import httpx

from connectors.chat.base import ChatConnector
from signbridge.settings import Settings


def build_chats(settings: Settings, http: httpx.AsyncClient) -> dict[str, ChatConnector]:
    from connectors.chat.webhook import WebhookChat

    chats: dict[str, ChatConnector] = {
        "webhook": WebhookChat(settings.webhook_outbound_url, settings.webhook_secret.get_secret_value(), http),
    }
    return chats
