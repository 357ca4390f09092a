"""The small interface every e-signature provider implements.

Calls come from activities only. Each must be idempotent for the same `request_id`
(the workflow id): creating a flow twice returns the first flow.
"""

from __future__ import annotations

from typing import Protocol

from signbridge.models import CreateFlowInput, OpenGroupInput, ProviderEvent, SignerLink


class ProviderError(Exception):
    """A provider call failed in a way retrying may fix."""


class ESignProvider(Protocol):
    name: str

    async def create_flow(self, req: CreateFlowInput) -> str:
        """Create the provider flow for this request and return its id."""

    async def open_group(self, req: OpenGroupInput) -> list[SignerLink]:
        """Make the group's signers able to sign now; return each one's link if the provider gives one."""

    async def poll(self, flow_id: str) -> list[ProviderEvent]:
        """Events reconstructed from the provider's current state (the polling fallback)."""

    async def download_signed(self, flow_id: str) -> bytes:
        """The signed document, once every signer has signed."""

    async def revoke(self, flow_id: str, reason: str) -> None:
        """Stop the flow at the provider; links die. Revoking a finished or revoked flow is a no-op."""

    async def remind(self, flow_id: str, signer_ids: list[str]) -> None:
        """Ask the provider to remind these signers (no-op where the chat reminder is enough)."""
