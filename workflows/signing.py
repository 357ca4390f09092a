"""`SigningWorkflow`: one durable execution per signing request.

prepare → create → announce → collect → finish. Pure orchestration: every side effect is an
activity (`activities/`: documents, provider, chat), the workflow keeps only ids, names and hashes —
never a signing link (the `open_group` activity stores links sealed in the database; `send_link`
reads them).

Why these message types:
- provider events are **signals**: the provider (or its webhook handler) must never wait on
  the workflow, and signals are stored even while no worker runs; duplicates are dropped by
  event id and by signer state.
- `cancel`, `remind` and `retry` are **updates**: the person in the chat needs a yes/no answer
  (not allowed, nothing to retry, …) and the validator rejects them before anything is
  written to history.

Why no infrastructure fault can fail the flow: a step that runs out of retries shows STUCK
through what needs no chat (search attributes, current details, the database row) and keeps
trying by itself, less and less often (up to `STUCK_RETRY_CAP` apart); `retry` tries now.
Only bad user input (`Rejected`) ends a flow early. Anything else escaping `run` is a bug and
fails the workflow *task*, which Temporal retries after a fix is deployed, never the workflow.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from signbridge.core import search_attributes
    from signbridge.core.approvals import ApprovalContent, ApprovalResultInput
    from signbridge.core.metrics import flow_outcome
    from signbridge.core.models import (
        ActionInput,
        AuditInput,
        CreateFlowInput,
        DocumentInfo,
        FileMessageInput,
        FinishInput,
        LinkMessageInput,
        OpenGroupInput,
        OrgInfo,
        Person,
        Placement,
        PollResult,
        PreparedDocument,
        ProviderEvent,
        ProviderFlowRef,
        PublishInput,
        ReplaceSignerInput,
        SealApproval,
        SignedDocuments,
        SignerDeparted,
        SignerLink,
        SignerState,
        SigningRequest,
        SignStatus,
        StatusView,
        TextMessageInput,
    )
    from signbridge.core.orgs import party_label, sealing
    from signbridge.core.temporal import (
        DURABLE_DELIVERY_PROVIDERS,
        PROVIDER_ACTIVITIES,
        SA_DEADLINE,
        SA_DOCUMENT,
        SA_INITIATOR,
        SA_PENDING,
        SA_STATUS,
        provider_task_queue,
    )
    from workflows import details

T = TypeVar("T")

REJECTED_ERROR = "Rejected"

# Patches (workflow.patched): flows started before a change replay with the old behaviour.
PATCH_FEWER_PUBLISHES = "fewer-publishes-2026-11"
# Chat-side activities (card, link, text, file: quick calls, idempotent by key) run as local
# activities: one marker event each instead of three events plus a workflow task; provider API
# calls go to the provider's own task queue, whose workers cap them to its API quota.
PATCH_LOCAL_CHAT = "local-chat-provider-queues-2026-11"
LOCAL_ACTIVITIES = ("publish", "send_link", "send_text", "send_file")
# Steps that run out of retries show STUCK and keep retrying by themselves (instead of waiting
# for an operator); no exception escapes `run` as a workflow failure.
PATCH_SELF_HEALING = "self-healing-steps-2026-12"
# A row of a bulk send tells its parent when its links are out and when it ended.
PATCH_BULK_ROWS = "bulk-rows-2026-12"
# An organisation that requires it approves the use of its seal (用印审批) before the group of the
# signatory who applies it opens; flows without such a seal never ask for the patch.
PATCH_SEAL_APPROVAL = "seal-approval-2026-12"
# A signer's link locked after too many wrong one-time codes (a "locked" provider event) shows on
# the card. Only new events take this path; the marker keeps it explicit in histories.
PATCH_SIGN_CODES = "sign-codes-2026-12"
BULK_PROGRESS_SIGNAL = "row_progress"
# Quiet waits: a flow polls its provider on a timer only while the provider's webhooks are not known
# to work (never for the built-in provider, whose events a relay delivers durably; never once a
# webhook reached this flow, or a poll learned that the provider's webhooks arrive), at most
# `Timing.max_quiet_polls` quiet polls in a row, and once more at the deadline before expiring.
# Asked only where the old rule would poll (a timer poll due before any other wake-up, or the
# deadline), so flows that never reach such a point record no marker and keep their history size.
PATCH_QUIET_WAITS = "quiet-waits-2026-12"
# How recent a provider's last verified webhook must be for a poll to count its webhooks as working.
WEBHOOKS_RECENT = timedelta(days=1)
# A flow started from an approval reads the approval's documents and signers first and writes its
# result back to the approval at the end. Only such flows ask for it: older histories never do.
PATCH_APPROVALS = "approvals-2026-12"
APPROVAL_RETRY_CAP = timedelta(hours=1)
# Once every signature is in, a certificate of completion is issued (from the database) and
# delivered with the signed files.
PATCH_CERTIFICATE = "certificate-2026-12"
# One marker for every patch above: a flow started with it takes all of them without recording
# a marker each (and, with each marker, an upsert of TemporalChangeVersion: two history events per
# patch in every new flow), and issues its certificate of completion as a local activity (one
# marker instead of three events and a workflow task). Asked first thing in `run`, so every flow
# started before it replays (and carries on) with the markers it recorded.
PATCH_BASELINE = "baseline-2026-12"
# A signer who left the company is found (a departure signal, or the directory asked by the
# reminder's own `send_link`, whose answer is then DEPARTED), flagged on the card, and can be
# replaced (`replace` update) by the initiator or an operator. No patch: existing histories carry
# no such signal, update or answer (their `send_link` results are None), so they replay unchanged.
DEPARTED = "departed"

# A failed step raises one of these: an activity's failure as ActivityError; a local activity
# that ran out of attempts (or hit a non-retryable error) as its bare ApplicationError; a local
# activity that ran out of time as ActivityError(TimeoutError) live but as a bare TimeoutError
# on replay — treating all alike keeps replay taking the path the live run took.
STEP_FAILURES = (ActivityError, ApplicationError, ActivityTimeout)
# Every local-activity retry waits on a workflow timer, never inside the worker: backing off in
# the worker holds the workflow task open (Temporal extends it every ~8 s for as long as the chat
# is down), and a worker shut down meanwhile leaves the retry's timeout timers behind in sdk-core,
# which panic ("receive half not dropped") when they fire.
LOCAL_RETRY_THRESHOLD = timedelta(milliseconds=1)
ACTIVITY_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
# An activity's own retries within the step retry window: 1 s, doubling, at most 5 min apart.
RETRY_FIRST = timedelta(seconds=1)
RETRY_MAX = timedelta(minutes=5)
# While STUCK: the first retry after at most a minute, then doubling, at most this far apart.
STUCK_FIRST_RETRY = timedelta(minutes=1)
STUCK_RETRY_CAP = timedelta(minutes=15)


# What each activity does, in words, for the Temporal UI's event history.
ACTIVITY_SUMMARIES = {
    "prepare": "Fetch and check the document, check the signers",
    "create_flow": "Create the flow at the e-signature provider",
    "open_group": "Open the next signing group at the provider",
    "publish": "Update the status card, database and audit trail",
    "send_link": "Send a signer their signing link",
    "send_text": "Post a message in the chat",
    "poll": "Poll the provider (no event arrived in time)",
    "poll_flow": "Poll the provider (an event may be overdue) and whether its webhooks arrive",
    "remind": "Ask the provider to remind pending signers",
    "revoke": "Revoke the provider flow",
    "finish": "Download, verify and store the signed document",
    "certify": "Issue the certificate of completion",
    "send_file": "Deliver the signed document to the chat",
    "read_approval": "Read the approval's documents and signers",
    "approval_result": "Write the result back to the approval",
    "replace_signer": "Put another person in a departed signer's place at the provider",
}


def attempts_within(window: timedelta) -> int:
    """How many tries the activity retry policy makes before `window` has passed."""
    tries, elapsed, interval = 1, timedelta(), RETRY_FIRST
    while elapsed + interval <= window:
        tries, elapsed, interval = tries + 1, elapsed + interval, min(interval * 2, RETRY_MAX)
    return tries


class _Stop(Exception):
    """Unwinds the run to its end once the flow reached a terminal state (cancel, decline, …)."""


@workflow.defn(name="SigningWorkflow")
class SigningWorkflow:
    @workflow.init
    def __init__(self, req: SigningRequest) -> None:
        self.req = req
        self.initiator = req.initiator  # replaced by the directory's view of them after prepare
        self.status = SignStatus.PREPARING
        self.signers = [SignerState(person=p, group=g) for g, group in enumerate(req.groups) for p in group]
        self.document: DocumentInfo | None = None
        self.signed_document: DocumentInfo | None = None
        self.flow_id: str | None = None
        self.current_group = 0
        self.reason: str | None = None
        self.stuck_step: str | None = None
        self.deadline: datetime | None = None
        self.seen_events: set[str] = set()
        self.inbox: list[ProviderEvent] = []
        self.cancel_request: ActionInput | None = None
        self.remind_requests: list[ActionInput] = []
        self.retry_requested = False
        self.last_activity_at: datetime | None = None
        self.pending_audit: list[AuditInput] = []
        self.links: dict[str, str | None] = {}  # signer id -> signing link, resent by reminders
        self.manual_reminders = 0
        self.stuck_count = 0
        self.quiet_polls = 0  # polls in a row that found nothing new: spaces the next one out
        self.closed = False  # True once the final state is published (cards, DB, audit)
        self.confirm_needed = False  # an unconfirmable event arrived: poll the provider now
        # A provider event reached this flow as a signal (a webhook or the built-in provider's own
        # delivery), or a poll learned that the provider's webhooks arrive: no timer polls needed.
        self.webhooks_confirmed = False
        self.deadline_polled = False  # the last-chance poll before expiring was made
        self.deadline_upserted = True  # False until SignDeadline is written (PATCH_LOCAL_CHAT flows)
        self.resume_status: SignStatus | None = None  # what a STUCK flow goes back to
        self.where = ""  # the current details outside STUCK, put back once a stuck step goes through
        self.stuck_since: datetime | None = None
        self.documents: list[DocumentInfo] = []  # every document when there are several
        self.placements: list[Placement] = []
        self.signed_documents: list[DocumentInfo] = []
        self.organisations: list[OrgInfo] = []
        self.seal_approvals: list[SealApproval] = []
        self.replace_requests: list[ActionInput] = []
        self.departed_news = False  # a signer was flagged departed: publish the card and tell the initiator
        self.told_departed: set[str] = set()  # whose departure the initiator was told about
        self.baseline = False  # PATCH_BASELINE, asked first thing in `run`

    # ---- run ------------------------------------------------------------------------------

    @workflow.run
    async def run(self, req: SigningRequest) -> StatusView:
        # From the workflow's own clock (a starter's clock may differ). New flows write it
        # with their first status upsert instead of an upsert event of its own.
        self.deadline = workflow.now() + req.timing.deadline
        self.baseline = workflow.patched(PATCH_BASELINE)
        self.deadline_upserted = not self._patched(PATCH_LOCAL_CHAT)
        if self.deadline_upserted:
            self._upsert([SA_DEADLINE.value_set(self.deadline)])
        try:
            if req.problem:
                await self._reject(req.problem)
                return await self._close()
            self._where(details.checking())
            try:
                if self._reads_approval():
                    content: ApprovalContent = await self._step("read the approval", "read_approval", req.approval,
                                                                ApprovalContent)
                    self._take_approval(content)
                    if content.problem:
                        await self._reject(content.problem)
                        return await self._close()
                prepared: PreparedDocument = await self._step("prepare", "prepare", self.req, PreparedDocument)
                self._adopt(prepared)
            except ApplicationError as e:
                await self._reject(e.message)
                return await self._close()
            self._where(details.creating(req.provider))
            self.flow_id = await self._create_flow()
            self.status = SignStatus.IN_PROGRESS
            await self._open_group(0)
            await self._tell_bulk("sent")
            await self._collect()
            if not self.status.terminal:
                await self._finish()
        except _Stop:
            pass
        except FailureError as e:
            if not self._heals():
                raise
            # Only a bug gets here: fail the workflow task (Temporal retries it), not the flow.
            raise RuntimeError(f"unexpected {type(e).__name__} in the signing workflow: {e}") from e
        return await self._close()

    def _reads_approval(self) -> bool:
        """A platform's approval names its documents and signers only in its form: read it first."""
        approval = self.req.approval
        return approval is not None and not approval.self_contained and self._patched(PATCH_APPROVALS)

    def _take_approval(self, content: ApprovalContent) -> None:
        """The approval's documents, signers and title become the request's; its initiator too, and
        the chat is theirs when no chat was configured and the event did not say who they are."""
        initiator = content.initiator if content.initiator and not self.req.initiator.id else self.req.initiator
        chat = self.req.chat
        if not chat.chat_id and initiator.id:
            chat = chat.model_copy(update={"chat_id": initiator.id})
        if initiator.id and initiator.id != self.req.initiator.id:
            self._upsert([SA_INITIATOR.value_set(initiator.id)])  # findable by initiator like any other flow
        self.req = self.req.model_copy(update={"documents": content.documents, "groups": content.groups,
                                               "title": content.title, "initiator": initiator, "chat": chat})
        self.initiator = initiator
        self.signers = [SignerState(person=p, group=g) for g, group in enumerate(content.groups) for p in group]

    async def _write_back(self) -> None:
        """Tell the approval how the flow ended, once (the activity is keyed by the request). An
        outage only delays it: tries are spaced out, doubling, up to `APPROVAL_RETRY_CAP` apart; a
        refusal by the platform is recorded in the audit trail by the activity, which then gives up."""
        approval = self.req.approval
        if approval is None or not self._patched(PATCH_APPROVALS):
            return
        arg = ApprovalResultInput(
            request_id=self.req.request_id, approval=approval, chat_platform=self.req.chat.platform,
            chat_id=self.req.chat.chat_id, chat_kind=self.req.chat.chat_kind, status=self.status.value,
            title=self.req.title, reason=self.reason, initiator=self.initiator,
            signed=self.signed_documents or ([self.signed_document] if self.signed_document else []))
        pause = STUCK_FIRST_RETRY
        while True:
            try:
                await self._act("approval_result", arg, type(None))
                return
            except STEP_FAILURES as e:
                cause = e.cause if isinstance(e, ActivityError) and e.cause else e
                if isinstance(cause, ApplicationError) and cause.non_retryable:
                    workflow.logger.warning("not writing back to approval %s: %s", approval.instance_id, cause)
                    return  # trying again cannot help (a platform without approvals)
                workflow.set_current_details(f"{self.where}\n\nWriting the result back to the approval failed "
                                             f"({getattr(cause, 'message', None) or cause}); trying again in {pause}.")
            await workflow.sleep(pause)
            pause = min(pause * 2, APPROVAL_RETRY_CAP)

    def _adopt(self, prepared: PreparedDocument) -> None:
        """Keep the document, and the signers' names and contacts as the directory resolved them."""
        self.document = DocumentInfo.model_validate(
            prepared.model_dump(exclude={"groups", "initiator", "documents", "placements"}))
        self.documents = prepared.documents
        self.placements = prepared.placements
        resolved = {p.id: p for group in prepared.groups for p in group}
        self.initiator = prepared.initiator or self.initiator
        for s in self.signers:
            s.person = resolved.get(s.person.id, s.person)
        self.organisations = prepared.organisations
        by_name = {o.name: o for o in self.organisations}
        for s in self.signers:
            org = by_name.get(s.person.org.name) if s.person.org and s.person.org.seal else None
            if org is not None and org.requires_seal_approval:
                self.seal_approvals.append(SealApproval(org=org.name, signer_id=s.person.id,
                                                        keepers=[k.name for k in org.keepers]))

    async def _close(self) -> StatusView:
        """Everything is published: let waiting update handlers (cancel) answer, then end."""
        self._where(details.finished(self.status, self.reason))
        await self._write_back()
        flow_outcome(self.status.value)
        await self._tell_bulk("done")
        self.closed = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.view()

    # ---- steps ----------------------------------------------------------------------------

    async def _create_flow(self) -> str:
        assert self.document is not None and self.deadline is not None
        return await self._step(
            "create", "create_flow",
            CreateFlowInput(
                request_id=self.req.request_id,
                provider=self.req.provider,
                title=self.req.title,
                document=self.document,
                groups=[[s.person for s in self.signers if s.group == g] for g in range(len(self.req.groups))],
                expires_at=self.deadline,
                documents=self.documents,
                placements=self.placements,
            ),
            str,
        )

    async def _open_group(self, group: int) -> None:
        """Announce a group: make its signers able to sign, update the card, DM each their link."""
        assert self.flow_id is not None and self.deadline is not None
        self.current_group = group
        await self._approve_seals(group)
        members = [s for s in self.signers if s.group == group]
        self._where(details.waiting(group, len(self.req.groups), [s.person.name for s in members], self.deadline))
        links: list[SignerLink] = await self._step(
            f"open group {group + 1}",
            "open_group",
            OpenGroupInput(
                request_id=self.req.request_id,
                provider=self.req.provider,
                flow_id=self.flow_id,
                group=group,
                signers=[s.person for s in members],
                expires_at=self.deadline,
            ),
            list[SignerLink],
        )
        now = workflow.now()
        for s in members:
            if s.status == "waiting":
                s.status = "notified"
                s.notified_at = now
        self.last_activity_at = now
        await self._publish(f"group.opened:{group}", "group.opened", {"group": group + 1})
        # Older workers' `open_group` returned the links; newer ones return none (they are sealed
        # in the database), so new flows keep no signing link in their state.
        self.links.update({link.signer_id: link.url for link in links})
        for s in members:
            if s.status == "notified":
                await self._send_link(s, f"link:{s.person.id}")

    async def _collect(self) -> None:
        while True:
            await self._apply_events()
            if self.cancel_request is not None:
                await self._cancel()
            if self.replace_requests:
                await self._replace(self.replace_requests.pop(0))
                continue
            if self.departed_news:
                await self._flag_departed()
            group = [s for s in self.signers if s.group == self.current_group]
            if all(s.status == "signed" for s in group):
                if self.current_group + 1 >= len(self.req.groups):
                    return
                await self._open_group(self.current_group + 1)
                continue
            while self.remind_requests:
                await self._remind(self.remind_requests.pop(0))
            now = workflow.now()
            assert self.deadline is not None
            if now >= self.deadline:
                if await self._everyone_signed_after_all():
                    return
                await self._expire()
            for s in self._due_reminders(now):
                s.reminders_sent += 1
                if s.departed:
                    continue  # nobody to remind: the card asks for a replacement
                if await self._send_link(s, f"reminder:{s.person.id}:{s.reminders_sent}", reminder=True) == DEPARTED:
                    self._mark_departed(SignerDeparted(signer_id=s.person.id, source="directory"))
            other_wakes = min([self.deadline, *self._reminder_times()])
            next_poll = self._next_poll(now, other_wakes)
            if (next_poll is not None and now >= next_poll) or self.confirm_needed:
                self.confirm_needed = False
                await self._poll()
                continue
            wake = min(other_wakes, next_poll) if next_poll is not None else other_wakes
            try:
                await workflow.wait_condition(
                    lambda: bool(self.inbox or self.cancel_request or self.remind_requests or self.confirm_needed
                                 or self.replace_requests or self.departed_news),
                    timeout=max(wake - now, timedelta(seconds=1)),
                )
            except TimeoutError:
                pass

    async def _apply_events(self) -> None:
        changed = locked = False
        while self.inbox:
            event = self.inbox.pop(0)
            signer = next((s for s in self.signers if s.person.id == event.signer_id), None)
            detail: dict[str, Any] = {"event_id": event.event_id, "kind": event.kind, "signer": event.signer_id}
            if event.kind == "signed" and signer and signer.status != "signed":
                signer.status = "signed"
                signer.signed_at = event.occurred_at
                changed = True
                self.pending_audit.append(self._audit(f"event:{event.event_id}", "workflow.signed_event", detail,
                                                      actor=signer.person.id))
            elif event.kind == "declined" and signer and signer.status != "declined":
                signer.status = "declined"
                self.pending_audit.append(self._audit(f"event:{event.event_id}", "workflow.declined_event",
                                                      {**detail, "reason": event.reason}, actor=signer.person.id))
                await self._decline(signer.person, event.reason or "")
            elif event.kind == "expired":
                await self._expire()
            elif event.kind == "cancelled":
                await self._end(SignStatus.CANCELLED, "The provider cancelled the flow", revoke=False)
            elif event.kind == "completed":
                for s in self.signers:
                    if s.status != "signed":
                        s.status, s.signed_at, changed = "signed", event.occurred_at, True
            elif event.kind == "locked" and signer and signer.status == "notified" and self._patched(
                    PATCH_SIGN_CODES):
                signer.locked_until = datetime.fromisoformat(event.reason) if event.reason else None
                locked = True
                self.pending_audit.append(self._audit(f"event:{event.event_id}", "workflow.link_locked",
                                                      {**detail, "until": event.reason}, actor=signer.person.id))
        if locked and not changed:
            await self._publish(None, None, None)
        if changed:
            self.last_activity_at = workflow.now()
            self.quiet_polls = 0
            group_done = all(s.status == "signed" for s in self.signers if s.group == self.current_group)
            # When the group is complete the next step (next group, or the final card) publishes
            # anyway: one card update and six history events fewer per group.
            if not (group_done and self._fewer_publishes()):
                await self._publish(None, None, None)

    async def _finish(self) -> None:
        assert self.flow_id is not None and self.document is not None
        self.status = SignStatus.FINISHING
        self._where(details.finishing())
        if not self._fewer_publishes():
            await self._publish(None, None, None)
        else:
            self._upsert([SA_STATUS.value_set(self.status.value), SA_PENDING.value_set([])])
        finished: SignedDocuments = await self._step(
            "finish", "finish",
            FinishInput(request_id=self.req.request_id, provider=self.req.provider, flow_id=self.flow_id,
                        original=self.document,
                        expected_signatures=len(self.signers) + len(sealing([s.person for s in self.signers])),
                        originals=self.documents),
            SignedDocuments,
        )
        signed = DocumentInfo.model_validate(finished.model_dump(exclude={"documents"}))
        self.signed_document, self.signed_documents = signed, finished.documents
        certificate = await self._certify() if self._patched(PATCH_CERTIFICATE) else None
        await self._step("send signed file", "send_file",
                         FileMessageInput(request_id=self.req.request_id, chat=self.req.chat, document=signed,
                                          documents=finished.documents, cc=self.req.cc, certificate=certificate,
                                          email_copies=[s.person for s in self.signers
                                                        if s.person.external and s.person.email]),
                         type(None))
        self.status = SignStatus.COMPLETED
        await self._publish("status:COMPLETED", "request.completed", {"signed_sha256": signed.sha256})

    # ---- seal-use approval (用印审批) ---------------------------------------------------------

    async def _approve_seals(self, group: int) -> None:
        """Before a group whose signatory applies a seal that needs approval opens, the seal's
        keepers are asked (a private message each; the buttons are on the card, as updates whose
        validator checks the keeper); the group opens once one keeper of each such seal approved.
        A refusal ends the flow DECLINED with the keeper's reason."""
        in_group = {s.person.id for s in self.signers if s.group == group}
        asked = [a for a in self.seal_approvals if a.signer_id in in_group and a.status == "waiting"]
        if not asked or not self._patched(PATCH_SEAL_APPROVAL):
            return
        for a in asked:
            a.status = "pending"
        self._where(f"Waiting for seal-use approval: {', '.join(a.org for a in asked)}")
        await self._publish(f"seal.requested:{group}", "seal.approval_requested",
                            {"group": group + 1, "organisations": [a.org for a in asked]})
        for a in asked:
            await self._ask_keepers(a)
        assert self.deadline is not None
        try:
            await workflow.wait_condition(
                lambda: all(a.status != "pending" for a in asked) or any(a.status == "refused" for a in asked)
                or self.cancel_request is not None,
                timeout=max(self.deadline - workflow.now(), timedelta(seconds=1)))
        except TimeoutError:
            await self._expire()
        if self.cancel_request is not None:
            await self._cancel()
        refused = next((a for a in asked if a.status == "refused"), None)
        if refused is not None:
            self.reason = f"{refused.by}（{refused.org} 用印审批）: {refused.reason}" if refused.reason \
                else f"{refused.by}（{refused.org} 用印审批）"
            await self._tell(None, "seal_refused", {"who": refused.by or "", "org": refused.org,
                                                    "title": self.req.title, "reason": refused.reason or ""})
            await self._end(SignStatus.DECLINED, self.reason, revoke=True)

    async def _ask_keepers(self, approval: SealApproval) -> None:
        org = next(o for o in self.organisations if o.name == approval.org)
        signer = next(s.person for s in self.signers if s.person.id == approval.signer_id)
        others = [party_label(s.person) for s in self.signers
                  if not (s.person.org and s.person.org.name == approval.org)]
        params = {"requester": self.initiator.name, "title": self.req.title, "org": org.name,
                  "seal": signer.org.seal_kind if signer.org else "", "signatory": signer.name,
                  "document": self.document.name if self.document else "",
                  "counterparties": "、".join(others)}
        for keeper in org.keepers:
            await self._step("ask a seal keeper", "send_text",
                             TextMessageInput(request_id=self.req.request_id, chat=self.req.chat,
                                              key=f"seal_approval:{org.credit_code}:{keeper.id}",
                                              kind="seal_approval", params=params, to=keeper),
                             type(None))

    def _keeper_of(self, actor_id: str) -> list[SealApproval]:
        """The pending approvals `actor_id` may decide: those of organisations they keep the seal of."""
        kept = {o.name for o in self.organisations if any(k.id == actor_id for k in o.keepers)}
        return [a for a in self.seal_approvals if a.status == "pending" and a.org in kept]

    @workflow.update(name="approve_seal")
    def approve_seal(self, action: ActionInput) -> StatusView:
        """A seal keeper approves the use of their organisation's seal (同意用印)."""
        for a in self._keeper_of(action.actor.id):
            a.status, a.by = "approved", action.actor.name or action.actor.id
            self.pending_audit.append(self._audit(f"seal-approved:{a.org}:{a.signer_id}", "seal.approved",
                                                  {"organisation": a.org, "signer": a.signer_id},
                                                  actor=action.actor.id))
        return self.view()

    @approve_seal.validator
    def _validate_approve_seal(self, action: ActionInput) -> None:
        self._require_keeper(action)

    @workflow.update(name="refuse_seal")
    def refuse_seal(self, action: ActionInput) -> StatusView:
        """A seal keeper refuses (拒绝): the flow ends DECLINED with their reason."""
        for a in self._keeper_of(action.actor.id):
            a.status, a.by, a.reason = "refused", action.actor.name or action.actor.id, action.reason
            self.pending_audit.append(self._audit(f"seal-refused:{a.org}:{a.signer_id}", "seal.refused",
                                                  {"organisation": a.org, "signer": a.signer_id,
                                                   "reason": action.reason}, actor=action.actor.id))
        return self.view()

    @refuse_seal.validator
    def _validate_refuse_seal(self, action: ActionInput) -> None:
        self._require_keeper(action)

    def _require_keeper(self, action: ActionInput) -> None:
        pending = [a for a in self.seal_approvals if a.status == "pending"]
        if not pending or self.status.terminal:
            raise ApplicationError("No seal-use approval is waiting in this request", type="NotAllowed")
        if not self._keeper_of(action.actor.id):
            orgs = "、".join(sorted({a.org for a in pending}))
            raise ApplicationError(f"Only a seal keeper of {orgs} may approve or refuse the use of its seal",
                                   type="PermissionDenied")
    async def _certify(self) -> DocumentInfo:
        """The certificate of completion, made by the activity from the database: it first writes
        the audit events still pending here (the last signatures) and the view with the signed files."""
        audits = list(self.pending_audit)
        certificate: DocumentInfo = await self._step(
            "certificate of completion", "certify", PublishInput(view=self.view(), audits=audits), DocumentInfo)
        written = {a.key for a in audits}
        self.pending_audit = [a for a in self.pending_audit if a.key not in written]
        return certificate

    # ---- endings --------------------------------------------------------------------------

    async def _reject(self, reason: str) -> None:
        self.status = SignStatus.REJECTED
        self.reason = reason
        await self._tell(None, "rejected", {"reason": reason})
        await self._publish("status:REJECTED", "request.rejected", {"reason": reason})

    async def _decline(self, who: Person, reason: str) -> None:
        self.reason = f"{who.name}: {reason}" if reason else who.name
        await self._tell(self.initiator, "declined", {"who": who.name, "title": self.req.title, "reason": reason})
        await self._end(SignStatus.DECLINED, self.reason, revoke=True)

    async def _expire(self) -> None:
        await self._tell(None, "expired", {"title": self.req.title})
        await self._end(SignStatus.EXPIRED, "The deadline passed before everyone signed", revoke=True)

    async def _cancel(self) -> None:
        assert self.cancel_request is not None
        actor = self.cancel_request.actor
        reason = self.cancel_request.reason or f"Cancelled by {actor.name or actor.id}"
        await self._end(SignStatus.CANCELLED, reason, revoke=True, actor=actor.id)

    async def _end(self, status: SignStatus, reason: str, *, revoke: bool, actor: str = "system") -> None:
        """Close the flow in a terminal state; revoking is best effort so an outage can't block it."""
        self.status = status
        self.reason = self.reason if status == SignStatus.DECLINED else reason
        if revoke and self.flow_id:
            try:
                await self._act(
                    "revoke",
                    ProviderFlowRef(request_id=self.req.request_id, provider=self.req.provider,
                                    flow_id=self.flow_id, reason=reason),
                    type(None),
                    attempts=5,
                )
            except ActivityError as e:
                self.pending_audit.append(self._audit("revoke-failed", "provider.revoke_failed",
                                                      {"error": str(e.cause or e)}))
        await self._publish(f"status:{status.value}", f"request.{status.value.lower()}",
                            {"reason": reason}, actor=actor)
        raise _Stop

    # ---- departed signers -----------------------------------------------------------------

    def _pending(self, signer_id: str) -> SignerState | None:
        """The signer `signer_id` while they still have to sign (not signed, not declined)."""
        return next((s for s in self.signers if s.person.id == signer_id and s.status in ("waiting", "notified")),
                    None)

    def _mark_departed(self, news: SignerDeparted) -> None:
        s = self._pending(news.signer_id)
        if s is None or s.departed:
            return
        s.departed = True
        self.departed_news = True
        self.pending_audit.append(self._audit(f"departed:{s.person.id}", "signer.departed",
                                              {"signer": s.person.id, "source": news.source}))

    async def _flag_departed(self) -> None:
        """The card shows who left (with a "replace signer" button); the initiator is told privately."""
        self.departed_news = False
        await self._publish(None, None, None)
        for s in self.signers:
            if s.departed and s.status in ("waiting", "notified") and s.person.id not in self.told_departed:
                self.told_departed.add(s.person.id)
                await self._step("tell the initiator", "send_text", TextMessageInput(
                    request_id=self.req.request_id, chat=self.req.chat, key=f"departed:{s.person.id}",
                    kind="signer_departed", params={"who": s.person.name, "title": self.req.title},
                    to=self.initiator), type(None))

    async def _replace(self, action: ActionInput) -> None:
        """`action.replacement` signs in the place of `action.signer_ids[0]`: their link dies at the
        provider, the new signer gets theirs when their group signs now. What the sender must fix
        (a provider that cannot replace, a replacement it cannot take) is said in the chat and the
        flow keeps waiting."""
        assert self.flow_id is not None and self.deadline is not None and action.replacement is not None
        s = self._pending(action.signer_ids[0])
        if s is None:  # they signed or declined meanwhile
            return
        old = s.person
        opened = s.group == self.current_group
        try:
            person: Person = await self._step(
                f"replace {old.name}", "replace_signer",
                ReplaceSignerInput(request_id=self.req.request_id, provider=self.req.provider, flow_id=self.flow_id,
                                   chat=self.req.chat, old_id=old.id, new=action.replacement, group=s.group,
                                   opened=opened, expires_at=self.deadline),
                Person)
        except ApplicationError as e:  # Rejected: the sender's to fix
            await self._step("tell the chat", "send_text", TextMessageInput(
                request_id=self.req.request_id, chat=self.req.chat, key=f"replace-refused:{old.id}:{len(self.signers)}"
                f":{action.replacement.id}", kind="replace_refused", params={"who": old.name, "reason": e.message}),
                type(None))
            return
        s.person, s.replaces, s.departed, s.reminders_sent = person, old.id, False, 0
        s.status, s.notified_at = ("notified", workflow.now()) if opened else ("waiting", None)
        self.links.pop(old.id, None)
        await self._publish(f"replaced:{old.id}:{person.id}", "signer.replaced",
                            {"old": old.id, "old_name": old.name, "new": person.id, "new_name": person.name},
                            actor=action.actor.id)
        if opened:
            await self._send_link(s, f"link:{person.id}")

    # ---- reminders and polling ------------------------------------------------------------

    def _reminder_due_at(self, s: SignerState) -> datetime | None:
        t = self.req.timing
        if s.status != "notified" or s.notified_at is None or s.reminders_sent >= t.reminder_max:
            return None
        return s.notified_at + t.reminder_first_after + t.reminder_every * s.reminders_sent

    def _reminder_times(self) -> list[datetime]:
        return [d for s in self.signers if (d := self._reminder_due_at(s)) is not None]

    def _due_reminders(self, now: datetime) -> list[SignerState]:
        return [s for s in self.signers if (d := self._reminder_due_at(s)) is not None and d <= now]

    async def _remind(self, action: ActionInput) -> None:
        pending = [s for s in self.signers if s.status == "notified"
                   and (not action.signer_ids or s.person.id in action.signer_ids)]
        self.manual_reminders += 1
        for s in pending:
            await self._send_link(s, f"remind-now:{s.person.id}:{self.manual_reminders}", reminder=True)
        assert self.flow_id is not None
        await self._step("remind at provider", "remind",
                         ProviderFlowRef(request_id=self.req.request_id, provider=self.req.provider,
                                         flow_id=self.flow_id, signer_ids=[s.person.id for s in pending]),
                         type(None))

    def _poll_interval(self) -> timedelta:
        """`poll_after`, doubling after each poll that found nothing new, at most a day apart —
        so a flow waiting a week costs a handful of polls, not one per hour."""
        interval = self.req.timing.poll_after * (2 ** min(self.quiet_polls, 16))
        return min(interval, max(self.req.timing.poll_after, timedelta(days=1)))

    def _next_poll(self, now: datetime, other_wakes: datetime) -> datetime | None:
        """When the polling fallback reads the provider next; None: not on a timer.

        The old rule (flows recorded before PATCH_QUIET_WAITS) polls `_poll_interval()` after the
        last change, for ever. It matters only when that poll comes before every other wake-up
        (deadline, reminders): only then is the patch asked, so a flow whose old-rule poll would
        never come first records no marker. The new rule: no timer poll for a provider that
        delivers durably (built-in), for a flow whose webhooks are confirmed, or after
        `max_quiet_polls` quiet polls in a row (until an event resets the count)."""
        scheduled = (self.last_activity_at or now) + self._poll_interval()
        if scheduled > other_wakes and now < scheduled:
            return scheduled  # not before the next wake-up anyway: both rules set the same timer
        if not self._patched(PATCH_QUIET_WAITS):
            return scheduled
        if (self.req.provider in DURABLE_DELIVERY_PROVIDERS or self.webhooks_confirmed
                or self.quiet_polls >= self.req.timing.max_quiet_polls):
            return None
        return scheduled

    async def _everyone_signed_after_all(self) -> bool:
        """At the deadline, before expiring: one last poll, so a signature whose event was lost on the
        way (a webhook the provider gave up on, a relay behind) still completes the flow. True when
        the provider's state shows every signer signed; the flow then finishes instead of expiring."""
        if self.deadline_polled or not self._patched(PATCH_QUIET_WAITS):
            return False
        self.deadline_polled = True
        if not await self._poll(best_effort=True):
            return False  # the provider is down: expire as before (the revoke is best effort too)
        await self._apply_events()
        return all(s.status == "signed" for s in self.signers)

    async def _poll(self, best_effort: bool = False) -> bool:
        """The fallback when an event may be overdue: read the provider's state. New flows also learn
        whether the provider's webhooks arrive (a verified one within `WEBHOOKS_RECENT`).
        `best_effort`: a few tries, and False instead of STUCK when they all fail."""
        assert self.flow_id is not None
        self.last_activity_at = workflow.now()
        ref = ProviderFlowRef(request_id=self.req.request_id, provider=self.req.provider, flow_id=self.flow_id)
        events: list[ProviderEvent]
        if self._patched(PATCH_QUIET_WAITS):
            polled: PollResult
            if best_effort:
                try:
                    polled = await self._act("poll_flow", ref, PollResult, attempts=5)
                except STEP_FAILURES as e:
                    workflow.logger.warning("last poll of %s before expiring failed: %s", self.flow_id, e)
                    return False
            else:
                polled = await self._step("poll provider", "poll_flow", ref, PollResult)
            events = polled.events
            seen_at = polled.webhooks_seen_at
            if seen_at is not None and seen_at >= workflow.now() - WEBHOOKS_RECENT:
                self.webhooks_confirmed = True
        else:
            events = await self._step("poll provider", "poll", ref, list[ProviderEvent])
        seen = len(self.seen_events)
        for event in events:
            self._enqueue(event)
        self.quiet_polls = self.quiet_polls + 1 if len(self.seen_events) == seen else 0
        return True

    # ---- messages in ----------------------------------------------------------------------

    @workflow.signal(name="provider_event")
    def provider_event(self, event: ProviderEvent) -> None:
        """A provider callback. Signals, because the provider must never wait on the workflow.
        Its arrival shows the provider's webhooks reach this flow: no more timer polls (used only
        by flows with PATCH_QUIET_WAITS; a hint counts too — each one triggers a poll anyway)."""
        self.webhooks_confirmed = True
        self._enqueue(event)

    def _enqueue(self, event: ProviderEvent) -> None:
        if event.confirm:
            # The provider's signature doesn't cover the body: a replayed signature could carry
            # any content. Treat it as a hint and act on what the provider's state confirms.
            self.confirm_needed = True
            return
        if event.event_id in self.seen_events:
            return
        self.seen_events.add(event.event_id)
        self.inbox.append(event)

    @workflow.update(name="cancel")
    async def cancel(self, action: ActionInput) -> StatusView:
        """Stop the flow; answers once it is CANCELLED (or already ended another way) and published."""
        if self.cancel_request is None:
            self.cancel_request = action
            self.retry_requested = False
        await workflow.wait_condition(lambda: self.closed)
        return self.view()

    @cancel.validator
    def _validate_cancel(self, action: ActionInput) -> None:
        self._require_initiator_or_operator(action, "cancel")
        if self.status.terminal:
            raise ApplicationError(f"This request is already {self.status.value}", type="NotAllowed")

    @workflow.signal(name="bulk_cancel")
    def bulk_cancel(self, action: ActionInput) -> None:
        """A bulk send cancelled as a whole cancels each of its rows like the `cancel` update would."""
        if self.cancel_request is None and not self.status.terminal:
            self.cancel_request = action
            self.retry_requested = False

    @workflow.update(name="remind")
    def remind(self, action: ActionInput) -> StatusView:
        """Send the pending signers their link again now."""
        self.remind_requests.append(action)
        self.pending_audit.append(self._audit(f"remind-request:{self.manual_reminders + len(self.remind_requests)}",
                                              "request.reminded", {"signers": action.signer_ids},
                                              actor=action.actor.id))
        return self.view()

    @remind.validator
    def _validate_remind(self, action: ActionInput) -> None:
        self._require_initiator_or_operator(action, "remind")
        if self.status != SignStatus.IN_PROGRESS:
            raise ApplicationError(f"Nobody to remind: the request is {self.status.value}", type="NotAllowed")

    @workflow.signal(name="signer_departed")
    def signer_departed(self, news: SignerDeparted) -> None:
        """A platform said a signer left the company (or their account was deactivated)."""
        self._mark_departed(news)

    @workflow.update(name="replace")
    def replace(self, action: ActionInput) -> StatusView:
        """Someone else signs in a pending signer's place (they left the company); applied by the
        collect loop, so the answer is the flow as it is when the request is queued."""
        self.replace_requests.append(action)
        return self.view()

    @replace.validator
    def _validate_replace(self, action: ActionInput) -> None:
        self._require_initiator_or_operator(action, "replace a signer of")
        if self.status != SignStatus.IN_PROGRESS:
            raise ApplicationError(f"Nobody to replace: the request is {self.status.value}", type="NotAllowed")
        if len(action.signer_ids) != 1 or action.replacement is None:
            raise ApplicationError("Name one signer to replace and the person who signs instead",
                                   type="InvalidArgument")
        if self._pending(action.signer_ids[0]) is None:
            raise ApplicationError(f"{action.signer_ids[0]} is not a signer who still has to sign",
                                   type="NotAllowed")
        if any(s.person.id == action.replacement.id for s in self.signers):
            raise ApplicationError(f"{action.replacement.name or action.replacement.id} already signs this request",
                                   type="NotAllowed")

    @workflow.update(name="retry")
    def retry(self, action: ActionInput) -> StatusView:
        """Run the step that exhausted its retries again (an operator fixed the cause)."""
        self.retry_requested = True
        self.pending_audit.append(self._audit(f"retry:{self.stuck_count}", "request.retried",
                                              {"step": self.stuck_step}, actor=action.actor.id))
        return self.view()

    @retry.validator
    def _validate_retry(self, action: ActionInput) -> None:
        self._require_initiator_or_operator(action, "retry")
        if self.status != SignStatus.STUCK:
            raise ApplicationError(f"Nothing to retry: the request is {self.status.value}, not STUCK",
                                   type="NotAllowed")

    def _require_initiator_or_operator(self, action: ActionInput, what: str) -> None:
        if not (action.actor.is_operator or action.actor.id == self.initiator.id):
            raise ApplicationError(
                f"Only the initiator ({self.initiator.name}) or an operator may {what} this request",
                type="PermissionDenied",
            )

    @workflow.query(name="status")
    def status_query(self) -> StatusView:
        return self.view()

    # ---- plumbing -------------------------------------------------------------------------

    def view(self) -> StatusView:
        return StatusView(
            request_id=self.req.request_id,
            title=self.req.title,
            status=self.status,
            provider=self.req.provider,
            initiator=self.initiator,
            chat=self.req.chat,
            document=self.document,
            signers=self.signers,
            current_group=self.current_group,
            deadline=self.deadline,
            provider_flow_id=self.flow_id,
            signed_document=self.signed_document,
            reason=self.reason,
            stuck_step=self.stuck_step,
            events_seen=len(self.seen_events),
            documents=self.documents,
            signed_documents=self.signed_documents,
            bulk_id=self.req.bulk_id,
            cc=self.req.cc,
            approval=self.req.approval,
            seal_approvals=self.seal_approvals,
        )

    def _patched(self, patch: str) -> bool:
        """`workflow.patched(patch)`, except that a flow started with PATCH_BASELINE has them all
        and records no marker for each."""
        return self.baseline or workflow.patched(patch)

    def _fewer_publishes(self) -> bool:
        """PATCH_LOCAL_CHAT includes PATCH_FEWER_PUBLISHES: new flows record one marker, not two."""
        return self._patched(PATCH_LOCAL_CHAT) or self._patched(PATCH_FEWER_PUBLISHES)

    def _heals(self) -> bool:
        """Asked where a step failed: flows recorded before PATCH_SELF_HEALING replay as they ran."""
        return self._patched(PATCH_SELF_HEALING)

    def _where(self, text: str) -> None:
        """Where the flow is, in words (the Temporal UI's current details; `workflows.details`)."""
        self.where = text
        workflow.set_current_details(text)

    def _audit(self, key: str, action: str, detail: dict[str, Any], actor: str = "system") -> AuditInput:
        return AuditInput(request_id=self.req.request_id, key=key, action=action, actor=actor, detail=detail,
                          document_sha256=self.document.sha256 if self.document else None)

    def _upsert(self, updates: list[SearchAttributeUpdate[Any]]) -> None:
        """Every search-attribute write, fitted to Temporal's limits first: a value Temporal
        refuses would terminate the flow (`signbridge.search_attributes`)."""
        fitted = [u if u.value is None else u.key.value_set(search_attributes.fitted(u.value)) for u in updates]
        search_attributes.check_total([u.value for u in fitted])
        workflow.upsert_search_attributes(fitted)

    async def _publish(self, key: str | None, action: str | None, detail: dict[str, Any] | None,
                       actor: str = "system", best_effort: bool = False) -> None:
        """Search attributes + DB status + audit + the card, so every view of the flow agrees.

        `best_effort`: one try whose failure is swallowed (the audits wait for the next publish) —
        for showing STUCK, when the chat may be what is down; the database is written first.
        """
        pending = [s.person.id for s in self.signers if s.status == "notified"]
        updates: list[SearchAttributeUpdate[Any]] = [SA_STATUS.value_set(self.status.value),
                                                     SA_PENDING.value_set(pending)]
        if self.document:
            updates.append(SA_DOCUMENT.value_set(self.document.sha256))
        if not self.deadline_upserted and self.deadline is not None:
            updates.append(SA_DEADLINE.value_set(self.deadline))
            self.deadline_upserted = True
        self._upsert(updates)
        audits = self.pending_audit
        self.pending_audit = []
        if key and action:
            audits.append(self._audit(key, action, detail or {}, actor))
        arg = PublishInput(view=self.view(), audits=audits)
        if best_effort:
            heals = self._heals()  # before PATCH_SELF_HEALING: three tries, and only ActivityError was caught
            swallowed = STEP_FAILURES if heals else (ActivityError,)
            try:
                await self._act("publish", arg, type(None), attempts=1 if heals else 3)
            except swallowed:
                self.pending_audit = audits + self.pending_audit
            return
        await self._step("update the card", "publish", arg, type(None))

    async def _send_link(self, s: SignerState, key: str, reminder: bool = False) -> str | None:
        """None once sent; a reminder's answer is DEPARTED when the directory says they left
        (nothing was sent). Older workers' answers, and older histories', are None."""
        arg = LinkMessageInput(request_id=self.req.request_id, chat=self.req.chat, to=s.person,
                               title=self.req.title, sign_url=self.links.get(s.person.id), key=key,
                               reminder=reminder)
        answer: str | None = await self._step(f"send link to {s.person.name}", "send_link", arg, str | None)
        return answer

    async def _tell_bulk(self, state: str) -> None:
        """A bulk send's row tells its parent (`BulkSendWorkflow`) that its links are out or that it
        ended; the parent bounds how many rows start at once and keeps the bulk's card."""
        parent = workflow.info().parent
        if self.req.bulk_id is None or parent is None or not self._patched(PATCH_BULK_ROWS):
            return
        try:
            await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                BULK_PROGRESS_SIGNAL, {"request_id": self.req.request_id, "state": state, "status": self.status.value})
        except Exception as e:  # the parent ended (cancelled as a whole): nothing waits for this row
            workflow.logger.info("bulk parent %s did not take %s: %s", parent.workflow_id, state, e)

    async def _tell(self, to: Person | None, kind: str, params: dict[str, str]) -> None:
        """A message of `kind` (`signbridge.messages`), worded by the activity in the chat's language.
        A bulk send's rows say nothing to the group: the bulk's own card reports them."""
        if to is None and (self.req.bulk_id is not None or not self.req.chat.chat_id):
            return  # nobody to tell: an approval whose initiator is unknown has the audit trail only
        arg = TextMessageInput(request_id=self.req.request_id, chat=self.req.chat, key=kind, kind=kind,
                               params=params, to=to)
        await self._step("tell the chat", "send_text", arg, type(None))

    async def _act(self, name: str, arg: Any, result_type: type[T] | Any, attempts: int = 0) -> T:
        """One activity with the step's retry window; where it runs depends on what it calls.

        Chat calls are short and keyed for idempotency, so they run as local activities (a
        marker instead of three events and a workflow task each). Provider calls run on the
        provider's task queue, rate-limited to its API quota.
        """
        window = self.req.timing.step_retry_window
        local = (name in LOCAL_ACTIVITIES or (name == "certify" and self.baseline)) and self._patched(
            PATCH_LOCAL_CHAT)
        # Local activities get as many tries as fit in the window rather than a schedule-to-close
        # timeout: one that times out reports "Activity timed out" instead of the chat's error.
        counted = local and not attempts and self._heals()
        options: dict[str, Any] = dict(
            result_type=result_type,
            summary=ACTIVITY_SUMMARIES.get(name, name),
            start_to_close_timeout=timedelta(minutes=2),
            # A single try (while STUCK) is bounded by its start-to-close and heartbeat timeouts
            # alone: one that needs longer than the window (a 60-signature check) still finishes.
            schedule_to_close_timeout=None if counted or attempts == 1 else window,
            retry_policy=RetryPolicy(
                initial_interval=RETRY_FIRST,
                backoff_coefficient=2.0,
                maximum_interval=RETRY_MAX,
                maximum_attempts=attempts_within(window) if counted else attempts,
                non_retryable_error_types=[REJECTED_ERROR],
            ),
        )
        if local:
            return await workflow.execute_local_activity(  # type: ignore[no-any-return]
                name, arg, local_retry_threshold=LOCAL_RETRY_THRESHOLD, **options)
        if name in PROVIDER_ACTIVITIES and self._patched(PATCH_LOCAL_CHAT):
            options["task_queue"] = provider_task_queue(workflow.info().task_queue, self.req.provider)
        # The worker's activities heartbeat (`activities.heartbeat`): a killed worker's attempt is
        # retried elsewhere within this, not after the start-to-close timeout.
        return await workflow.execute_activity(  # type: ignore[no-any-return]
            name, arg, heartbeat_timeout=ACTIVITY_HEARTBEAT_TIMEOUT, **options)

    async def _step(self, name: str, activity: str, arg: Any, result_type: type[T] | Any) -> T:
        """Run activity `activity` as the step `name` until it goes through.

        Once its retry window is spent the flow shows STUCK and tries again by itself, one try at
        a time, each pause twice the last (up to `STUCK_RETRY_CAP`); `retry` tries now, `cancel`
        ends the flow. Bad user input (`Rejected`) is re-raised as the ApplicationError it is.
        """
        stuck, tries = False, 0
        while True:
            try:
                result: T = await self._act(activity, arg, result_type, attempts=1 if stuck else 0)
            except STEP_FAILURES as e:
                cause = e.cause if isinstance(e, ActivityError) and e.cause else e
                if isinstance(cause, ApplicationError) and cause.type == REJECTED_ERROR:
                    raise cause from None
                if not self._heals():
                    if isinstance(e, ApplicationError):
                        raise  # flows from before PATCH_SELF_HEALING failed here; replay must too
                    await self._wait_for_operator(name, activity, cause)
                    continue
                await self._show_stuck(name, activity, cause, first=not stuck)
                stuck = True
                # After an operator's `retry` that failed too, the pauses start short again.
                tries = 0 if await self._pause_before_retry(tries) else tries + 1
                continue
            if stuck:
                await self._recovered(name, tries)
            return result

    async def _show_stuck(self, name: str, activity: str, cause: BaseException, first: bool) -> None:
        """STUCK where it needs no chat: search attributes, current details, the database row."""
        error = str(getattr(cause, "message", None) or cause)
        self.reason = f"{name}: {error}"
        if first:
            self.stuck_since = workflow.now()
        workflow.set_current_details(details.stuck(self.req.request_id, activity, name, error,
                                                   self.stuck_since or workflow.now()))
        if not first:
            return
        self.resume_status, self.status, self.stuck_step = self.status, SignStatus.STUCK, name
        self.stuck_count += 1
        flow_outcome("stuck")
        await self._publish(f"stuck:{self.stuck_count}", "request.stuck", {"step": name, "error": self.reason},
                            best_effort=True)

    async def _pause_before_retry(self, tries: int) -> bool:
        """Wait for the next try: the backoff timer, or an operator's `retry` (returns True), or
        `cancel`. A `retry` that came while the last try was still running counts too."""
        first = min(self.req.timing.step_retry_window, STUCK_FIRST_RETRY)
        try:
            await workflow.wait_condition(lambda: self.retry_requested or self.cancel_request is not None,
                                          timeout=min(first * 2 ** min(tries, 16), STUCK_RETRY_CAP))
        except TimeoutError:
            pass
        if self.cancel_request is not None:
            self._leave_stuck()
            await self._cancel()
        by_operator, self.retry_requested = self.retry_requested, False
        return by_operator

    async def _recovered(self, name: str, tries: int) -> None:
        self._leave_stuck()
        workflow.set_current_details(details.recovered(name, tries, self.where))
        await self._publish(f"recovered:{self.stuck_count}", "request.recovered", {"step": name, "retries": tries},
                            best_effort=True)

    def _leave_stuck(self) -> None:
        assert self.resume_status is not None
        self.status, self.stuck_step, self.reason = self.resume_status, None, None

    async def _wait_for_operator(self, name: str, activity: str, cause: BaseException) -> None:
        """Flows from before PATCH_SELF_HEALING: show STUCK and wait for `retry` (or `cancel`)."""
        previous = self.status
        self.status = SignStatus.STUCK
        flow_outcome("stuck")
        self.stuck_step = name
        self.reason = f"{name}: {getattr(cause, 'message', None) or cause}"
        workflow.set_current_details(details.stuck(self.req.request_id, activity, name, str(getattr(
            cause, "message", None) or cause), workflow.now(), by_itself=False))
        self.retry_requested = False
        self.stuck_count += 1
        await self._publish(f"stuck:{self.stuck_count}", "request.stuck",
                            {"step": name, "error": self.reason}, best_effort=True)
        await workflow.wait_condition(lambda: self.retry_requested or self.cancel_request is not None)
        self.status, self.stuck_step, self.reason = previous, None, None
        if self.cancel_request is not None:
            await self._cancel()
        workflow.set_current_details(self.where)
        self._upsert([SA_STATUS.value_set(self.status.value)])
