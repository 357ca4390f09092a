"""The small interface every e-signature provider implements, its webhook side, and what the
providers' REST clients share (errors, events, signer order).

Calls come from activities only. Each must be idempotent for the same `request_id`
(the workflow id): creating a flow twice returns the first flow.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeGuard, TypeVar, runtime_checkable

import httpx
from pydantic import SecretStr

from connectors.http import may_heal, retry_after
from signbridge.core.models import CreateFlowInput, OpenGroupInput, Person, ProviderEvent, SignerLink

T = TypeVar("T")


class ProviderError(Exception):
    """A provider call failed: `retryable` when another attempt may fix it (an outage, a rate limit:
    after `retry_after` seconds when the provider said so), not when it cannot (a refusal)."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.non_retryable = not retryable  # what `activities.errors.connector_errors` reads
        self.retry_after = retry_after


class ESignProvider(Protocol):
    name: str
    # True when the signed file is the original plus incremental updates (it must start with the
    # original bytes); False when the provider re-renders it (its evidence is recorded instead).
    incremental: bool

    async def create_flow(self, req: CreateFlowInput) -> str:
        """Create the provider flow for this request and return its id."""

    async def open_group(self, req: OpenGroupInput) -> list[SignerLink]:
        """Make the group's signers able to sign now; return each one's link if the provider gives one."""

    async def poll(self, flow_id: str) -> list[ProviderEvent]:
        """Events reconstructed from the provider's current state (the polling fallback)."""

    async def download_signed(self, flow_id: str) -> bytes:
        """The signed document, once every signer has signed."""

    async def evidence(self, flow_id: str) -> dict[str, Any]:
        """What the provider vouches with (its document hash, certificate or evidence report id)."""

    async def revoke(self, flow_id: str, reason: str) -> None:
        """Stop the flow at the provider; links die. Revoking a finished or revoked flow is a no-op."""

    async def remind(self, flow_id: str, signer_ids: list[str]) -> None:
        """Ask the provider to remind these signers (no-op where the chat reminder is enough)."""


class NothingToSign(Exception):
    """The signer has nothing left to do: they signed or declined, or the flow is closed."""

    def __init__(self, state: Literal["signed", "declined", "closed"], detail: str = "") -> None:
        super().__init__(detail or state)
        self.state = state


@runtime_checkable
class RecipientViews(Protocol):
    """Optional: providers whose signing URLs are short-lived (DocuSign embedded signing).

    SignBridge then posts its own stable link in the chat (`api/esign_links.py`) and asks for a
    fresh provider URL each time the signer clicks it.
    """

    async def recipient_view(self, flow_id: str, signer_id: str, return_url: str) -> str:
        """A fresh signing URL for this signer; `NothingToSign` if there is nothing to sign,
        `ProviderError` if the provider failed."""


class WebhookRejected(Exception):
    """Bad or missing signature, stale timestamp: answered 401 and nothing is started."""


@dataclass(frozen=True)
class WebhookReply:
    """Exactly what the provider expects back (e.g. Dropbox Sign's `Hello API Event Received`)."""

    status: int = 200
    body: bytes = b""
    media_type: str = "text/plain"


class ProviderWebhook(Protocol):
    name: str

    def parse(
        self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes
    ) -> tuple[list[ProviderEvent], WebhookReply]:
        """Verify (raise `WebhookRejected`) and normalise; unknown event types give no events."""


# ---- what the REST clients share ------------------------------------------------------------


def is_set(secret: SecretStr | None) -> TypeGuard[SecretStr]:
    """A secret setting that was given (a provider, or its webhook, is enabled by it)."""
    return secret is not None and bool(secret.get_secret_value())


async def send(http: httpx.AsyncClient, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
    """One HTTP call; no answer at all (timeout, connection) is an outage: retryable."""
    try:
        return await http.request(method, url, **kwargs)
    except httpx.TimeoutException as e:
        raise ProviderError(f"{what}: timeout", retryable=True) from e
    except httpx.TransportError as e:
        raise ProviderError(f"{what}: {type(e).__name__}", retryable=True) from e


def checked(resp: httpx.Response, what: str, detail: Callable[[dict[str, Any]], Any] = lambda body: "",
            also_retry: tuple[int, ...] = (), wait: float | None = None) -> httpx.Response:
    """The response when it succeeded. Else a `ProviderError` retryable for 5xx, 408, 429 (and
    `also_retry`), after `wait` or the response's `Retry-After`; `detail` picks the provider's
    own words out of a JSON error body."""
    status = resp.status_code
    if status < 400:
        return resp
    try:
        body = resp.json()
        words = str(detail(body) if isinstance(body, dict) else "")
    except ValueError:
        words = resp.text[:200]
    raise ProviderError(f"{what}: HTTP {status} {words}".strip(), retryable=may_heal(status) or status in also_retry,
                        retry_after=wait if wait is not None else retry_after(resp))


def iso_time(value: Any) -> datetime:
    """An ISO 8601 time from the provider (naive = UTC); now when missing or unreadable."""
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def epoch_time(value: Any, per_second: int = 1) -> datetime:
    """A Unix time from the provider (`per_second=1000`: in milliseconds); now when missing or unreadable."""
    try:
        return datetime.fromtimestamp(int(value) / per_second, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)


def provider_event(provider: str, flow_id: str, kind: str, occurred_at: datetime, *, who: str | None = None,
                   signer_id: str | None = None, reason: str | None = None,
                   raw: dict[str, Any] | None = None) -> ProviderEvent:
    """An event named by the provider's state, never by the delivery: `{provider}:{flow}:{kind}`, or
    `{provider}:{flow}:{who}:{kind}` for one signer. A redelivery, a reordered delivery and a poll
    then give the same id, and the workflow applies the event once."""
    event_id = f"{provider}:{flow_id}:{kind}" if who is None else f"{provider}:{flow_id}:{who}:{kind}"
    return ProviderEvent(event_id=event_id, provider=provider, flow_id=flow_id, kind=kind,  # type: ignore[arg-type]
                         signer_id=signer_id, reason=reason, occurred_at=occurred_at, raw=raw or {})


def each_signer_once(groups: list[list[Person]]) -> list[tuple[int, Person]]:
    """(group index, person) in signing order, each person at their first place only."""
    seen: set[str] = set()
    return [(g, p) for g, people in enumerate(groups) for p in people
            if not (p.id in seen or seen.add(p.id))]  # type: ignore[func-returns-value]


async def pending_links(signers: list[Person], known: Mapping[Any, T], where: str, done: Callable[[T], bool],
                        link: Callable[[Person, T], Awaitable[str | None]]) -> list[SignerLink]:
    """The link of each of `signers` who has not finished yet (`done`), by their state in `known`
    (keyed by SignBridge signer id). A signer the provider does not know is a refusal: the flow was
    made without them, and asking again cannot add them."""
    links: list[SignerLink] = []
    for person in signers:
        state = known.get(person.id)
        if state is None:
            raise ProviderError(f"signer {person.id} is not in {where}", retryable=False)
        if not done(state):
            links.append(SignerLink(signer_id=person.id, url=await link(person, state)))
    return links
