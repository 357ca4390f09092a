"""Provider calls. Each connector is idempotent per request id, so these are too.

`open_group` keeps the signers' links (bearer secrets) out of Temporal: it seals them into the
database, where `send_link` reads them, and returns none to the workflow.
"""

from __future__ import annotations

from temporalio import activity

from activities.deps import Deps
from activities.errors import connector_errors
from signbridge.core.models import CreateFlowInput, OpenGroupInput, ProviderEvent, ProviderFlowRef, SignerLink
from store import audit
from store.repos import signing_links, signing_records


class ProviderActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name="create_flow")
    async def create_flow(self, req: CreateFlowInput) -> str:
        with connector_errors():
            flow_id = await self.deps.provider(req.provider).create_flow(req)
        # Recording the flow id is what lets a provider webhook find this workflow.
        signing_records.update(self.deps.engine, req.request_id, provider_flow_id=flow_id)
        audit.record(self.deps.engine, request_id=req.request_id, key="flow-created", action="provider.flow_created",
                     actor=req.provider, detail={"flow_id": flow_id}, document_sha256=req.document.sha256)
        return flow_id

    @activity.defn(name="open_group")
    async def open_group(self, req: OpenGroupInput) -> list[SignerLink]:
        """Returns an empty list: the links are in the database (older workers returned them)."""
        with connector_errors():
            links = await self.deps.provider(req.provider).open_group(req)
        signing_links.remember(self.deps.engine, req.request_id,
                               {link.signer_id: self.deps.vault.seal(link.url) if link.url else None for link in links})
        return []

    @activity.defn(name="poll")
    async def poll(self, ref: ProviderFlowRef) -> list[ProviderEvent]:
        with connector_errors():
            return await self.deps.provider(ref.provider).poll(ref.flow_id)

    @activity.defn(name="revoke")
    async def revoke(self, ref: ProviderFlowRef) -> None:
        with connector_errors():
            await self.deps.provider(ref.provider).revoke(ref.flow_id, ref.reason or "")

    @activity.defn(name="remind")
    async def remind(self, ref: ProviderFlowRef) -> None:
        with connector_errors():
            await self.deps.provider(ref.provider).remind(ref.flow_id, ref.signer_ids)
