"""The small interface every chat platform implements.

Every method is called from an activity and must be idempotent for the same `key`: a
retried activity must not post a second card or a second link message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx

from signbridge.core.cards import Card
from signbridge.core.models import ChatRef, DocumentInfo, DocumentSource, Person


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


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` is either delta-seconds or an HTTP date; `None` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def raise_for_status(resp: httpx.Response, what: str) -> None:
    """An HTTP failure the way the workflow's retries need it: 429, 408 and 5xx are worth retrying
    (after `Retry-After` when given), any other 4xx is not."""
    status = resp.status_code
    if status in (408, 429) or status >= 500:
        raise ChatUnavailable(f"{what}: HTTP {status}",
                              retry_after=retry_after_seconds(resp.headers.get("Retry-After")))
    if status >= 400:
        try:
            detail = resp.text[:200]
        except httpx.ResponseNotRead:  # a streamed download: its body is not worth reading
            detail = ""
        raise ChatRejected(f"{what}: HTTP {status} {detail}".rstrip(), status)


async def read_within(resp: httpx.Response, limit: int, too_big: Exception) -> bytes:
    """The streamed body, refused with `too_big` as soon as it (or its declared length) passes
    `limit` — a file is never held whole before its size is known."""
    if int(resp.headers.get("content-length") or 0) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


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
