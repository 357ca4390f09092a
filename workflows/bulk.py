"""`BulkSendWorkflow`: one template, one CSV, one child `SigningWorkflow` per good row.

load → start rows (at most `concurrency` starting at once) → wait for every row to end → done.

- **Bounded concurrency.** A row is "starting" from its start until its signers have their links
  (the child signals `row_progress` "sent", or "done" if it ended before that — REJECTED at
  prepare); no more than `concurrency` rows are starting at once, so a 10,000-row CSV does not
  hit the chat, the provider or the worker with 10,000 prepares at the same moment.
- **Bounded history.** The CSV stays in the database; the workflow pages through it
  (`bulk_rows`, a page at a time) and keeps counts plus the ids of rows still open. After
  `rows_per_run` starts, or when Temporal suggests it, it continues as new with that progress.
  Children are started with `ParentClosePolicy.ABANDON`, so they outlive a run that continues as
  new; they signal the parent by workflow id, which reaches its newest run.
- **Each row once.** A row's request id comes from the row's content (`activities.bulk`), and a
  child is started with `REJECT_DUPLICATE`: a worker killed half-way, a re-run of the same CSV, or
  a later CSV repeating a row never sends it twice (it is counted as sent before).
- **Cancel as a whole.** The `cancel` update stops starting rows and tells every open row
  (`bulk_cancel` signal), which cancels itself like its own `cancel` update would.
- **No infrastructure fault fails it**: its activities retry until they go through (a bulk
  send has no STUCK state of its own: its rows show theirs); only a CSV that cannot be used
  (`Rejected`) ends it early, REJECTED, with the reason in the chat.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from signbridge.core.models import (
        ActionInput,
        BulkLoaded,
        BulkPage,
        BulkProgress,
        BulkRowRequest,
        BulkSendInput,
        BulkView,
        SignStatus,
        StatusView,
    )
    from signbridge.core.temporal import initial_search_attributes

T = TypeVar("T")

WORKFLOW_NAME = "BulkSendWorkflow"
SIGNING_WORKFLOW = "SigningWorkflow"
REJECTED_ERROR = "Rejected"
PAGE = 50  # rows fetched from the database per `bulk_rows`
PUBLISH_EVERY = timedelta(seconds=5)  # the card is updated at most this often while rows come in
HISTORY_LIMIT = 10_000  # events in one run before it continues as new (Temporal's limit is 51,200)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                    maximum_interval=timedelta(minutes=5), non_retryable_error_types=[REJECTED_ERROR])


@workflow.defn(name=WORKFLOW_NAME)
class BulkSendWorkflow:
    @workflow.init
    def __init__(self, arg: BulkSendInput) -> None:
        self.arg = arg
        self.p = arg.progress.model_copy(deep=True) if arg.progress else BulkProgress()
        self.starting: set[str] = set(self.p.starting)
        self.open: set[str] = set(self.p.open)
        self.buffer: list[BulkRowRequest] = []
        self.cancel_request: ActionInput | None = None
        self.cancel_sent = False
        self.dirty = False
        self.last_publish: datetime | None = None
        self.started_this_run = 0
        # What rows said before their start call returned here (a fast REJECTED row can).
        self.early: dict[str, list[dict[str, str]]] = {}

    @workflow.run
    async def run(self, arg: BulkSendInput) -> BulkView:
        if self.p.status == "LOADING":
            if not await self._load():
                return self.view()
        while True:
            if self.cancel_request is not None and self.p.status == "RUNNING":
                self._begin_cancel()
            await self._tell_cancel()
            if self.p.status == "RUNNING":
                await self._start_rows()
            if (self.p.all_started or self.p.status == "CANCELLED") and not self.open and not self.p.to_cancel:
                break
            if self._should_continue_as_new() and (self.cancel_request is None or self.cancel_sent):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self.arg.model_copy(update={"progress": self._progress(runs=1)}))
            await self._publish_if_due()
            await self._wait()
        if self.p.status == "RUNNING":
            self.p.status = "DONE"
        await self._publish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.view()

    # ---- steps ---------------------------------------------------------------------------------

    async def _load(self) -> bool:
        """Read the CSV into the database; False when it cannot be used (REJECTED, said in the chat)."""
        problem = self.arg.problem
        if problem is None:
            try:
                loaded: BulkLoaded = await self._act("bulk_load", self.arg, BulkLoaded, "Read and check the CSV")
            except ActivityError as e:  # activities retry until they go through unless the input is bad
                cause = e.cause
                problem = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
            else:
                self.p.total, self.p.bad, self.p.problems = loaded.total, loaded.bad, loaded.problems
                self.p.status = "RUNNING"
                await self._publish()
                return True
        self.p.status, self.p.reason = "REJECTED", problem
        self.cancel_sent = True  # a cancel that came while loading has nothing left to cancel
        await self._publish()
        return False

    async def _start_rows(self) -> None:
        """Start rows while fewer than `concurrency` are starting, in CSV order."""
        while (len(self.starting) < self.arg.concurrency and not self.p.all_started
               and self.cancel_request is None and not self._should_continue_as_new()):
            if not self.buffer:
                self.buffer = await self._act(
                    "bulk_rows", BulkPage(bulk=self.arg.model_copy(update={"progress": None}),
                                          after_line=self.p.next_line, limit=PAGE),
                    list[BulkRowRequest], "Read the next rows of the CSV")
                if not self.buffer:
                    self.p.all_started = True
                    self.dirty = True
                    return
            row = self.buffer.pop(0)
            self.p.next_line = row.line
            self.dirty = True
            if row.already:
                self.p.skipped += 1
                continue
            req = row.request
            try:
                await workflow.start_child_workflow(
                    SIGNING_WORKFLOW, req, id=req.request_id, result_type=StatusView,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    search_attributes=initial_search_attributes(req),
                    static_summary=f"{req.title} — {self.arg.title} 第 {row.line} 行 / line {row.line}")
            except WorkflowAlreadyStartedError:
                self.p.skipped += 1  # its row was sent before (a running or retained flow has its id)
                continue
            self.p.started += 1
            self.started_this_run += 1
            self.starting.add(req.request_id)
            self.open.add(req.request_id)
            self.p.peak_starting = max(self.p.peak_starting, len(self.starting))
            for message in self.early.pop(req.request_id, []):
                self._apply(message)

    def _begin_cancel(self) -> None:
        """Stop starting rows; every open row is to be told (`_tell_cancel`)."""
        assert self.cancel_request is not None
        actor = self.cancel_request.actor
        self.p.status = "CANCELLED"
        self.p.reason = self.cancel_request.reason or f"撤销人 / cancelled by {actor.name or actor.id}"
        self.p.to_cancel = sorted(self.open)
        self.buffer = []
        self.dirty = True

    async def _tell_cancel(self) -> None:
        """Each open row cancels itself; a row that ended meanwhile is skipped. All in this run: the
        `cancel` update waits for it, and a run continues as new only once its handlers finished."""
        while self.p.to_cancel:
            request_id = self.p.to_cancel.pop(0)
            if request_id not in self.open or self.cancel_request is None:
                continue
            try:
                await workflow.get_external_workflow_handle(request_id).signal("bulk_cancel", self.cancel_request)
            except Exception as e:  # the row ended before the signal reached it: nothing to cancel
                workflow.logger.info("row %s did not take the cancel: %s", request_id, e)
        if self.p.status == "CANCELLED" and not self.p.to_cancel:
            if not self.cancel_sent:
                self.p.not_sent = max(0, self.p.total - self.p.bad - self.p.started - self.p.skipped)
                await self._publish()
            self.cancel_sent = True

    async def _wait(self) -> None:
        """Until a row reports, a cancel arrives, a starting slot frees up — or the card is due."""
        def ready() -> bool:
            return (bool(self.p.to_cancel) or (self.cancel_request is not None and self.p.status == "RUNNING")
                    or (self.p.status == "RUNNING" and not self.p.all_started
                        and len(self.starting) < self.arg.concurrency)
                    or ((self.p.status != "RUNNING" or self.p.all_started) and not self.open))

        if ready():
            return
        timeout = PUBLISH_EVERY if self.dirty else None
        try:
            await workflow.wait_condition(lambda: ready() or (self.dirty and timeout is None), timeout=timeout)
        except TimeoutError:
            pass

    async def _publish_if_due(self) -> None:
        now = workflow.now()
        if self.dirty and (self.last_publish is None or now - self.last_publish >= PUBLISH_EVERY):
            await self._publish()

    async def _publish(self) -> None:
        """The database and the card; a chat that is down delays the card, never the rows: the
        next publish (at most `PUBLISH_EVERY` later) tries again."""
        self.dirty = False
        self.last_publish = workflow.now()
        try:
            await workflow.execute_local_activity(
                "bulk_publish", self.view(), start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=timedelta(minutes=2), retry_policy=RETRY,
                local_retry_threshold=timedelta(milliseconds=1), summary="Update the bulk send's card")
        except (ActivityError, ApplicationError, ActivityTimeout) as e:
            workflow.logger.warning("bulk card of %s not updated: %s", self.arg.bulk_id, e)
            self.dirty = True

    async def _act(self, name: str, arg: Any, result_type: Any, summary: str) -> Any:
        return await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30) if name == "bulk_load" else None, retry_policy=RETRY,
            summary=summary)

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (self.started_this_run >= self.arg.rows_per_run or info.is_continue_as_new_suggested()
                or info.get_current_history_length() > HISTORY_LIMIT)

    # ---- messages in ---------------------------------------------------------------------------

    @workflow.signal(name="row_progress")
    def row_progress(self, message: dict[str, str]) -> None:
        """A row's links are out ("sent") or it ended ("done", with its status)."""
        request_id = message.get("request_id", "")
        if request_id not in self.open:  # its start has not returned here yet
            self.early.setdefault(request_id, []).append(message)
            return
        self._apply(message)

    def _apply(self, message: dict[str, str]) -> None:
        request_id, state = message.get("request_id", ""), message.get("state")
        if state == "sent" and request_id in self.starting:
            self.starting.discard(request_id)
            self.p.sent += 1
        elif state == "done" and request_id in self.open:
            self.starting.discard(request_id)
            self.open.discard(request_id)
            status = message.get("status") or "UNKNOWN"
            self.p.outcomes[status] = self.p.outcomes.get(status, 0) + 1
        self.dirty = True

    @workflow.update(name="cancel")
    async def cancel(self, action: ActionInput) -> StatusView:
        """Cancel the bulk send as a whole: no further row starts, every open row is cancelled.
        Answers once every open row has been told (the rows end on their own right after)."""
        if self.cancel_request is None:
            self.cancel_request = action
        await workflow.wait_condition(lambda: self.cancel_sent)
        return self._status_view()

    @cancel.validator
    def _validate_cancel(self, action: ActionInput) -> None:
        if not (action.actor.is_operator or action.actor.id == self.arg.initiator.id):
            raise ApplicationError(f"Only the initiator ({self.arg.initiator.name}) or an operator may cancel this "
                                   "bulk send", type="PermissionDenied")
        if self.p.status not in ("LOADING", "RUNNING") or self.cancel_request is not None:
            raise ApplicationError(f"This bulk send is already {self.p.status}", type="NotAllowed")

    @workflow.query(name="progress")
    def progress(self) -> BulkView:
        return self.view()

    @workflow.query(name="status")
    def status(self) -> StatusView:
        """What a card's "status" button and `GET /api/v1/signing-requests/{id}` can show of a bulk send."""
        return self._status_view()

    # ---- views ---------------------------------------------------------------------------------

    def _progress(self, runs: int = 0) -> BulkProgress:
        self.p.starting, self.p.open = sorted(self.starting), sorted(self.open)
        return self.p.model_copy(update={"runs": self.p.runs + runs})

    def view(self) -> BulkView:
        return BulkView(**self._progress().model_dump(), bulk_id=self.arg.bulk_id, title=self.arg.title,
                        template=self.arg.template, initiator=self.arg.initiator, chat=self.arg.chat,
                        concurrency=self.arg.concurrency)

    def _status_view(self) -> StatusView:
        status = {"LOADING": SignStatus.PREPARING, "RUNNING": SignStatus.IN_PROGRESS, "DONE": SignStatus.COMPLETED,
                  "CANCELLED": SignStatus.CANCELLED, "REJECTED": SignStatus.REJECTED}[self.p.status]
        return StatusView(request_id=self.arg.bulk_id, title=self.arg.title, status=status,
                          provider=self.arg.provider, initiator=self.arg.initiator, chat=self.arg.chat,
                          reason=self.p.reason, bulk_id=self.arg.bulk_id)
