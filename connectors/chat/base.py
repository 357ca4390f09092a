"""The small interface every chat platform implements, and the failures it raises.

Every method is called from an activity, which may run more than once. Messages (links, texts,
the signed file) are sent once per `key` by the activity (`activities/chat.py`, over
`store/repos/sent_messages.py`); a connector passes the key on to the platform's own dedupe
where there is one, and says when a request went out but got no answer (`maybe_delivered`), so
the activity waits before sending it again. A card is the connector's own: `upsert_card` posts
it once and updates that message afterwards, however often it is called.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import httpx

from connectors.http import may_heal, retry_after
from signbridge.core.approvals import ApprovalForm, ApprovalResult
from signbridge.core.cards import Card
from signbridge.core.models import ApprovalRef, ChatRef, DocumentSource, Person


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
    """The platform refused the request (a 4xx or an error code): retrying the same call won't help.
    `code`: the platform's own error code, for the refusals a connector acts on."""

    non_retryable = True

    def __init__(self, message: str, status: int, code: str | int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def unreachable(who: str, e: httpx.HTTPError) -> ChatUnavailable:
    """A call that got no answer. Never connected: it did not arrive. Sent but unanswered (a read
    timeout, a dropped connection): the chat may have acted on it, so `maybe_delivered`."""
    never_sent = isinstance(e, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return ChatUnavailable(f"{who} {'unreachable' if never_sent else 'did not answer'} ({type(e).__name__}: {e})",
                           maybe_delivered=not never_sent)


def session(http: httpx.AsyncClient | None, timeout: float) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """The worker's shared client, or one for this call only (a connector built without one)."""
    return nullcontext(http) if http is not None else httpx.AsyncClient(timeout=timeout)


def raise_for_status(resp: httpx.Response, what: str) -> None:
    """An HTTP failure the way the workflow's retries need it: 429, 408 and 5xx are worth retrying
    (after `Retry-After` when given), any other 4xx is not."""
    status = resp.status_code
    if may_heal(status):
        raise ChatUnavailable(f"{what}: HTTP {status}", retry_after=retry_after(resp))
    if status >= 400:
        try:
            detail = resp.text[:200]
        except httpx.ResponseNotRead:  # a streamed download: its body is not worth reading
            detail = ""
        raise ChatRejected(f"{what}: HTTP {status} {detail}".rstrip(), status)


class InputProblem(Exception):
    """Something about the user's input (a file, a signer): shown in the chat, the flow ends REJECTED."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


MB = 1024 * 1024


@dataclass(frozen=True)
class OutboundFile:
    """A file to deliver into a chat (the signed document, the certificate of completion).

    `data` holds its bytes when the platform takes them as an upload; None when the file is over
    the platform's limit (`ChatConnector.max_file_bytes`), and then the connector posts the
    download `url` with `note` saying why (written by the activity, in the chat's language).
    `url` is always there: the webhook IM fetches the file from it, and a link card needs it.
    """

    name: str
    sha256: str
    size: int
    url: str
    data: bytes | None = None
    note: str | None = None
    kind: Literal["signed", "certificate"] = "signed"


def upload_failed(e: ChatUnavailable) -> ChatUnavailable:
    """An upload that got no answer delivered nothing people can see: the message that would
    show the file goes out only after it, so a retry need not wait as for a maybe-sent message."""
    return ChatUnavailable(str(e), retry_after=e.retry_after, maybe_delivered=False)


class ChatConnector(Protocol):
    platform: str
    # The platform's documented upload limit in bytes; a larger file goes as a link with the reason.
    # 0: the platform takes no uploads from SignBridge (the webhook IM fetches files by URL).
    max_file_bytes: int

    async def upsert_card(self, chat: ChatRef, card_key: str, card: Card) -> None:
        """Post the card the first time, update that same message afterwards."""

    async def send_link(self, chat: ChatRef, to: Person, text: str, sign_url: str | None, key: str) -> None:
        """Tell one signer privately that it is their turn (or remind them)."""

    async def send_text(self, chat: ChatRef, to: Person | None, text: str, key: str) -> None:
        """A plain message to the chat (`to=None`) or to one person."""

    async def send_file(self, chat: ChatRef, to: Person | None, file: OutboundFile, key: str) -> None:
        """Deliver a file to the chat (`to=None`) or privately to one person: uploaded when `file.data`
        is set (the platform's upload API, then a file message), else its link with `file.note`."""

    async def download(self, chat: ChatRef, source: DocumentSource, max_bytes: int) -> bytes:
        """The document's bytes through the platform's file API; `InputProblem` when it can't be had
        (gone, refused, over `max_bytes`), `ChatError` when retrying may help."""

    async def resolve(self, chat: ChatRef, person: Person) -> Person:
        """The signer with name/email/mobile from the platform's directory; `InputProblem` for
        departed or deactivated users."""


@runtime_checkable
class ApprovalSource(Protocol):
    """A platform whose approvals can become signing tasks (Feishu, DingTalk, WeCom, the webhook IM)."""

    async def read_approval(self, ref: ApprovalRef) -> ApprovalForm:
        """The instance as the platform shows it now, its fields normalised (files as sources this
        connector's `download` can fetch); `InputProblem` when the platform says it does not exist."""

    async def write_back(self, chat: ChatRef, ref: ApprovalRef, result: ApprovalResult, key: str) -> None:
        """Tell the approval how the signing ended (a comment, a message to the initiator, an update)."""


@runtime_checkable
class ApprovalSubscriber(Protocol):
    """A platform that sends approval events only for definitions the app subscribed to (Feishu)."""

    async def subscribe_approval(self, definition: str) -> bool:
        """Subscribe to `definition`'s events: True when newly subscribed, False when it was already."""
