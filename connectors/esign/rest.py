"""What the providers' REST clients share: one call, one reading of a failed answer, event ids
taken from state, signers in order, where each signer signs, and the links of those still to sign.

Each provider speaks its own API, but an outage is retried the same way everywhere, an event
is named the same way (so a redelivery and a poll agree), and a signer SignBridge asks about
but the provider does not know is the same refusal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeGuard, TypeVar

import httpx
from pydantic import SecretStr

from connectors.esign.base import ProviderError
from connectors.http import may_heal, retry_after
from signbridge.core.models import Person, Placement, ProviderEvent, SignerLink

T = TypeVar("T")


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


def pdf_of(resp: httpx.Response, what: str) -> bytes:
    """A downloaded document. An error answer or anything but a PDF (an error page, a file not
    ready yet, a download link that expired and is asked for anew on the retry) is retryable."""
    if resp.status_code >= 400 or not resp.content.startswith(b"%PDF-"):
        raise ProviderError(f"{what}: HTTP {resp.status_code}, not a PDF", retryable=True)
    return resp.content


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
    """A Unix time from the provider (`per_second=1000`: in milliseconds); now when missing or
    unreadable. One too large for any clock (`OverflowError`) is no time a provider sends: the
    webhook route answers it as a bad payload."""
    try:
        return datetime.fromtimestamp(int(value) / per_second, tz=UTC)
    except (TypeError, ValueError):
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


def placement_of(placements: Sequence[Placement], signer_id: str, document: int = 0) -> Placement | None:
    """Where `signer_id` signs document `document` (`activities.placements`): a template's
    signature field or the spot beside an anchor text; None = the provider's own default."""
    return next((p for p in placements if p.signer_id == signer_id and p.document == document
                 and p.kind == "sign"), None)


def box_centre(placement: Placement) -> tuple[float, float]:
    x1, y1, x2, y2 = placement.box
    return round((x1 + x2) / 2, 2), round((y1 + y2) / 2, 2)


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
