"""What every activity needs, built once per worker and injected (class-based activities)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import httpx
from sqlalchemy.engine import Engine

from connectors.chat.base import ChatConnector
from connectors.convert.base import Converter
from connectors.esign.base import ESignProvider
from connectors.notify.registry import Notifier, build_notifier
from signbridge.core.link_vault import LinkVault
from signbridge.core.settings import Settings
from store.blobs import BlobStore


@dataclass
class Deps:
    settings: Settings
    engine: Engine
    blobs: BlobStore
    http: httpx.AsyncClient
    chats: dict[str, ChatConnector]
    providers: dict[str, ESignProvider]
    converter: Converter | None = None  # None: chosen from the settings (`connectors.convert.registry`)
    notify: Notifier | None = None  # None: email and SMS senders from the settings

    @cached_property
    def notifier(self) -> Notifier:
        """Reaches external signers by SMS or email (`connectors.notify`)."""
        return self.notify if self.notify is not None else build_notifier(self.settings, self.http)

    @cached_property
    def vault(self) -> LinkVault:
        """Seals signing links into the database (`open_group`) and opens them (`send_link`)."""
        return LinkVault(self.settings.link_secret.get_secret_value())

    def chat(self, platform: str) -> ChatConnector:
        try:
            return self.chats[platform]
        except KeyError:
            raise LookupError(f"chat platform {platform!r} is not configured") from None

    def provider(self, name: str) -> ESignProvider:
        try:
            return self.providers[name]
        except KeyError:
            raise LookupError(f"e-signature provider {name!r} is not configured") from None
