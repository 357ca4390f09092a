"""Provider calls. Each connector is idempotent per request id, so these are too.

`open_group` keeps the signers' links (bearer secrets) out of Temporal: it seals them into the
database, where `send_link` reads them, and returns none to the workflow.
"""

from __future__ import annotations

from temporalio import activity

from activities.deps import Deps
from activities.errors import connector_errors, rejected
from connectors.chat.base import InputProblem
from connectors.esign.base import ReplacesSigners, contact_needs
from signbridge.core.models import (
    CreateFlowInput,
    OpenGroupInput,
    Person,
    PollResult,
    ProviderEvent,
    ProviderFlowRef,
    ReplaceSignerInput,
    SignerLink,
)
from signbridge.core.signers import SignerProblem, checked_person, signer_problem, unreachable_signers
from store import audit
from store.repos import participants, signing_links, signing_records, webhooks_seen


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

    @activity.defn(name="poll_flow")
    async def poll_flow(self, ref: ProviderFlowRef) -> PollResult:
        """`poll`, plus when the provider's last verified webhook arrived (any flow's): the workflow
        stops polling on a timer once it knows the provider's webhooks reach us."""
        with connector_errors():
            events = await self.deps.provider(ref.provider).poll(ref.flow_id)
        return PollResult(events=events, webhooks_seen_at=webhooks_seen.last_verified(self.deps.engine, ref.provider))

    @activity.defn(name="revoke")
    async def revoke(self, ref: ProviderFlowRef) -> None:
        with connector_errors():
            await self.deps.provider(ref.provider).revoke(ref.flow_id, ref.reason or "")

    @activity.defn(name="remind")
    async def remind(self, ref: ProviderFlowRef) -> None:
        with connector_errors():
            await self.deps.provider(ref.provider).remind(ref.flow_id, ref.signer_ids)

    @activity.defn(name="replace_signer")
    async def replace_signer(self, req: ReplaceSignerInput) -> Person:
        """Put `req.new` in `req.old_id`'s place at the provider; returns the new signer as they will
        sign (named by the directory unless external, checked like every signer at prepare). Their
        link, when their group signs now, is sealed into the database like `open_group`'s.
        What the sender must fix (a provider that cannot replace, a signer it cannot take) is
        `Rejected`: the workflow says so in the chat and keeps waiting for the old signer's place."""
        provider = self.deps.provider(req.provider)
        if not isinstance(provider, ReplacesSigners):
            raise rejected(f"签署服务 {req.provider} 不支持替换签署人：请撤销后重新发起"
                           f"（The provider {req.provider} cannot replace a signer: cancel and send the request "
                           "again）")
        try:
            with connector_errors():
                person = req.new if req.new.external else await self.deps.chat(req.chat.platform).resolve(
                    req.chat, req.new)
            person = checked_person(person)
            problem = signer_problem([[person]]) or unreachable_signers(req.provider, contact_needs(provider),
                                                                        [[person]])
        except (InputProblem, SignerProblem) as e:
            raise rejected(e.message) from e
        if problem:
            raise rejected(problem)
        with connector_errors():
            link = await provider.replace_signer(req.flow_id, req.old_id, person, req.opened, req.expires_at)
        if link is not None:
            signing_links.remember(self.deps.engine, req.request_id,
                                   {link.signer_id: self.deps.vault.seal(link.url) if link.url else None})
        participants.remember(self.deps.engine, req.request_id, req.chat.platform, {person.id: "signer"})
        audit.record(self.deps.engine, request_id=req.request_id, key=f"replaced:{req.old_id}:{person.id}",
                     action="provider.signer_replaced", actor=req.provider,
                     detail={"flow_id": req.flow_id, "old": req.old_id, "new": person.id})
        return person
