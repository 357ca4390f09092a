"""The small interface every chat platform implements.

Every method is called from an activity and must be idempotent for the same `key`: a
retried activity must not post a second card or a second link message.
"""

from __future__ import annotations

from typing import Protocol

from signbridge.cards import Card
from signbridge.models import ChatRef, DocumentInfo, DocumentSource, Person


class ChatError(Exception):
    """A chat API call failed in a way retrying may fix (outage, rate limit)."""


class ChatUnavailable(ChatError):
    """Outage, timeout or rate limit: retry, after `retry_after` seconds when the platform said so.

    `maybe_delivered`: the request went out but no answer came (a read timeout, a dropped
    connection), so the chat may have acted on it; a message is then sent again only after a pause.
    """

    def __init__(self, message: str, retry_after: float | None = None, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.maybe_delivered = maybe_delivered


class ChatRejected(ChatError):
    """The platform refused the request (a 4xx or an error code): retrying the same call won't help."""

    non_retryable = True

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class InputProblem(Exception):
    """Something about the user's input (a file, a signer): shown in the chat, the flow ends REJECTED."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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

    async def download(self, chat: ChatRef, source: DocumentSource, max_bytes: int) -> bytes:
        """The document's bytes through the platform's file API; `InputProblem` when it can't be had
        (gone, refused, over `max_bytes`), `ChatError` when retrying may help."""

    async def resolve(self, chat: ChatRef, person: Person) -> Person:
        """The signer with name/email/mobile from the platform's directory; `InputProblem` for
        departed or deactivated users."""
