"""The small interface every e-signature provider implements, and its webhook side.

Calls come from activities only. Each must be idempotent for the same `request_id`
(the workflow id): creating a flow twice returns the first flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from signbridge.core.models import CreateFlowInput, OpenGroupInput, Person, ProviderEvent, SignerLink


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
    # How the provider identifies a person: each signer needs at least one of these contacts
    # ("mobile", "email"); empty when the chat identifies them (the built-in provider). `prepare`
    # checks it, so a signer the provider cannot take is the sender's to fix (REJECTED with
    # "请补充李四的手机号"), never a create step that fails until someone notices it is STUCK.
    signer_contacts: frozenset[str]

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


MOBILE_OR_EMAIL = frozenset({"mobile", "email"})
EMAIL = frozenset({"email"})


def contact_needs(provider: object) -> frozenset[str]:
    """`provider.signer_contacts` (nothing for a provider that does not say)."""
    return frozenset(getattr(provider, "signer_contacts", frozenset()))


@runtime_checkable
class SeveralDocuments(Protocol):
    """Optional: a provider that signs several documents in one flow (one consent signs each).

    Without it, a request with more than one document is refused at prepare, before anything is
    created at the provider."""

    async def download_documents(self, flow_id: str) -> list[bytes]:
        """Every signed document, in the order of `CreateFlowInput.all_documents`."""


def several_documents(provider: object) -> bool:
    return isinstance(provider, SeveralDocuments)


class NothingToSign(Exception):
    """The signer has nothing left to do: they signed or declined, or the flow is closed."""

    def __init__(self, state: Literal["signed", "declined", "closed"], detail: str = "") -> None:
        super().__init__(detail or state)
        self.state = state


@runtime_checkable
class ReplacesSigners(Protocol):
    """Optional: a provider that can put another person in a pending signer's place (someone who
    left the company while the flow waits for them). Without it, `replace` is refused in the chat
    with the advice to cancel and start again."""

    async def replace_signer(self, flow_id: str, old_id: str, new: Person, opened: bool,
                             expires_at: datetime) -> SignerLink | None:
        """`old_id`'s link dies; `new` takes their place in the order (and their signature fields).
        With `opened` (their group signs now) `new`'s link, if the provider gives one. Idempotent."""


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
