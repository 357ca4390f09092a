"""The two approval steps of a flow started from an approval (`signbridge.core.approvals`).

`read_approval` asks the platform for the instance (through its connector's `read_approval`)
and maps its form to documents and signers; what the initiator must fix (not approved, no
attachment, no signer) is `Rejected`, so the flow says it and ends REJECTED. `approval_result`
writes the flow's end back to the approval once per flow (`sent_messages`, like every outbound
message); a platform that refuses it for good is recorded in the audit trail and not asked again.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.chat import ChatActivities
from activities.errors import connector_errors, rejected
from connectors.chat.base import ApprovalSource, ChatConnector, InputProblem
from signbridge.core import links, messages
from signbridge.core.approvals import (
    ApprovalContent,
    ApprovalProblem,
    ApprovalResult,
    ApprovalResultInput,
    content_of,
    initiator_of,
)
from signbridge.core.models import ApprovalRef, ChatRef
from store import audit

WRITE_BACK_KEY = "approval-result"


class ApprovalActivities(ChatActivities):
    def _source(self, platform: str) -> ApprovalSource:
        connector = self.deps.chat(platform)
        if not isinstance(connector, ApprovalSource):
            raise rejected(f"{platform} 不支持审批（{platform} has no approvals SignBridge can read）")
        return connector

    @activity.defn(name="read_approval")
    async def read_approval(self, ref: ApprovalRef) -> ApprovalContent:
        """The approval's documents and signers, as the mapping in `ref` finds them in its form."""
        source = self._source(ref.platform)
        try:
            with connector_errors():
                form = await source.read_approval(ref)
        except InputProblem as e:
            raise rejected(e.message) from e
        try:
            content = content_of(form, ref)
        except ApprovalProblem as e:  # said to the initiator, whom the form names
            content = ApprovalContent(title=ref.title or form.title or ref.instance_id, problem=e.message,
                                      initiator=initiator_of(form, ref))
        request_id = activity.info().workflow_id
        audit.record(self.deps.engine, request_id=request_id, key="approval.read", action="approval.read",
                     actor=ref.initiator_id or "system",
                     detail={"platform": ref.platform, "instance": ref.instance_id, "definition": ref.definition,
                             "status": form.status, "problem": content.problem,
                             "documents": [d.name for d in content.documents],
                             "signers": [[p.id for p in g] for g in content.groups]})
        return content

    @activity.defn(name="approval_result")
    async def approval_result(self, arg: ApprovalResultInput) -> None:
        """The result, once: a comment on the approval (Feishu, DingTalk), a message to the initiator
        (WeCom), an `approval.update` (webhook IM)."""
        lang = self.deps.settings.language_for(arg.approval.platform)
        files = tuple((d.name, links.file_url(self.deps.settings, d.blob_key, d.name), d.sha256) for d in arg.signed)
        if arg.status == "COMPLETED":
            text = messages.render("approval_completed", {"title": arg.title, "request": arg.request_id,
                                                          "files": " ".join(f"{n} {u}" for n, u, _ in files)}, lang)
        else:
            text = messages.render("approval_ended", {"title": arg.title, "request": arg.request_id,
                                                      "status": arg.status, "reason": arg.reason or ""}, lang)
        result = ApprovalResult(status=arg.status, text=text, files=files, request_id=arg.request_id,
                                initiator_id=arg.initiator.id)
        chat = ChatRef(platform=arg.chat_platform, tenant=arg.approval.tenant, chat_id=arg.chat_id,
                       chat_kind=arg.chat_kind, source_event_id=arg.request_id)
        key = f"{arg.request_id}:{WRITE_BACK_KEY}"
        source = self._source(arg.approval.platform)

        async def send(_: ChatConnector) -> None:
            await source.write_back(chat, arg.approval, result, key)

        detail = {"platform": arg.approval.platform, "instance": arg.approval.instance_id, "status": arg.status}
        try:
            await self.once(chat, key, send)
        except ApplicationError as e:
            if not e.non_retryable:  # an outage: the workflow tries again later
                raise
            audit.record(self.deps.engine, request_id=arg.request_id, key=WRITE_BACK_KEY,
                         action="approval.write_back_refused", actor="system", detail={**detail, "error": e.message})
            return
        audit.record(self.deps.engine, request_id=arg.request_id, key=WRITE_BACK_KEY, action="approval.written_back",
                     actor="system", detail=detail)
