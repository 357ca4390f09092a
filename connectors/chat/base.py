"""The small interface every chat platform implements.

Every method is called from an activity and must be idempotent for the same `key`: a
retried activity must not post a second card or a second link message.
"""

from __future__ import annotations

from typing import Protocol

from signbridge.cards import Card
from signbridge.models import ChatRef, DocumentInfo, Person


class ChatError(Exception):
    """A chat API call failed in a way retrying may fix (outage, rate limit)."""


class ChatConnector(Protocol):
    platform: str

    async def upsert_card(self, chat: ChatRef, card_key: str, card: Card) -> None:
        """Post the card the first time, update that same message afterwards."""

    async def send_link(self, chat: ChatRef, to: Person, text: str, sign_url: str | None, key: str) -> None:
        """Tell one signer privately that it is their turn (or remind them)."""

    async def send_text(self, chat: ChatRef, to: Person | None, text: str, key: str) -> None:
        """A plain message to the chat (`to=None`) or to one person."""

    async def send_file(self, chat: ChatRef, name: str, url: str, document: DocumentInfo, key: str) -> None:
        """Deliver the signed document to the chat."""
