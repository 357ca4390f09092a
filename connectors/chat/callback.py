"""The inbound contract every chat platform implements in its `inbound.py`.

Like `ProviderWebhook.parse(headers, query, body)` on the e-sign side: one route module
(`api/chat.py`) hands each callback to its platform as a neutral `Callback`; the platform checks
the signature, decrypts, answers a handshake and turns the payload into a `ChatEvent` (a message)
or a `ChatAction` (a button) — or a `Reply` to send back at once. After the intake acted, the
platform renders its `Outcome` as the `Reply` its servers expect. Nothing here knows FastAPI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.engine import Engine

from connectors.chat.base import ChatConnector
from signbridge.core.chat import (
    ApprovalEvent,
    Busy,
    ChatAction,
    ChatEvent,
    Deadline,
    Departure,
    FileRef,
    Incoming,
    Outcome,
)
from signbridge.core.commands import DEFAULT_BOT_NAME
from signbridge.core.untrusted import UntrustedInputError, load_json


@dataclass(frozen=True)
class Route:
    path: str
    methods: tuple[str, ...] = ("POST",)


@dataclass(frozen=True)
class Callback:
    """One HTTP callback as the platform sent it (headers looked up case-insensitively)."""

    path: str
    method: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """What to answer: `body` a dict/list (JSON), str (text) or None (empty). `after` runs once the
    answer went out (Slack explains a refusal through the click's response_url)."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    media_type: str | None = None
    after: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def error(cls, status: int, code: str, message: str, **headers: str) -> Reply:
        return cls(status, {"error": {"code": code, "message": message}}, headers)

    @classmethod
    def busy(cls, outcome: Busy) -> Reply:
        """503 + Retry-After: every platform delivers a callback again after a 5xx."""
        return cls.error(503, "unavailable", "SignBridge could not reach Temporal in time; deliver again",
                         **{"Retry-After": str(outcome.retry_after)})


class CallbackRejected(Exception):
    """Forged, stale or unsigned (401), malformed (400), too large (413): nothing starts.

    Raised from a long connection it marks the stored event as failed for good."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def invalid(message: str) -> CallbackRejected:
    return CallbackRejected(400, "invalid_event", message)


def json_object(raw: bytes | str) -> dict[str, Any]:
    """The body as a JSON object (depth-limited, see `signbridge.core.untrusted`), or 400."""
    try:
        data = load_json(raw)
    except UntrustedInputError as e:
        raise CallbackRejected(400, e.code, str(e)) from e
    if not isinstance(data, dict):
        raise CallbackRejected(400, "invalid_json", "The body is not a JSON object")
    return data


def embedded_object(raw: object) -> dict[str, Any]:
    """A JSON object a payload carries as a string (Feishu's message `content`, DingTalk's card
    `content`), or already as an object; {} for anything else."""
    if isinstance(raw, str | bytes):
        try:
            raw = load_json(raw)
        except UntrustedInputError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _no_fallback(event: ChatEvent) -> tuple[FileRef, ...]:
    return ()


@dataclass(frozen=True)
class Rules:
    """What the intake needs to know about a platform to act on its events.

    `deadline`: how long the platform waits for an answer. `no_file`: the reason a command with
    no document gets (it says how to send one on this platform). `file_lookback`: how old the
    sender's latest file may be (WeCom keeps media for 3 days). `fallback_files`: documents the
    platform can still find when none was seen (Slack: the channel's history at download time)."""

    deadline: Deadline
    no_file: str
    file_lookback: timedelta = timedelta(hours=24)
    fallback_files: Callable[[ChatEvent], tuple[FileRef, ...]] = _no_fallback


Received = ChatEvent | ChatAction | ApprovalEvent | Departure | Reply
ConfigT = TypeVar("ConfigT")


class DirectoryInbound(Generic[ConfigT]):
    """What the platforms whose callbacks carry bare user ids (DingTalk, WeCom) keep: their
    config, the database (the directory cache) and their connector, to name people within budget."""

    max_body = 256 * 1024

    def __init__(self, config: ConfigT, engine: Engine, directory: ChatConnector, bot_name: str) -> None:
        self.config = config
        self.engine = engine
        self.directory = directory
        self.bot_name = bot_name or DEFAULT_BOT_NAME

    def __repr__(self) -> str:  # never the secrets in its config
        return f"{type(self).__name__}()"


class Inbound(Protocol):
    platform: str
    rules: Rules
    max_body: int

    async def receive(self, call: Callback) -> Received:
        """Verify (raise `CallbackRejected`), decrypt and parse one callback."""

    def reply(self, received: Incoming, outcome: Outcome) -> Reply:
        """The platform's answer to the intake's outcome."""
