"""Calls into Temporal bounded by a deadline, their failures turned into `Outcome`s.

An unreachable or overloaded frontend makes the client retry internally for up to ~10 s, longer
than any chat platform waits, so every call runs under `asyncio.timeout`; what ran out of time
or failed for a reason the next attempt may not meet is `Busy`. What a call *answers* is decided
from the RPC status and the update failure's cause type, never from message text.
"""

from __future__ import annotations

import asyncio
import uuid

from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecution,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from signbridge.core.chat import (
    Accepted,
    Applied,
    Busy,
    Deadline,
    Duplicate,
    NotFound,
    Outcome,
    Refused,
    Started,
    request_id_for,
)
from signbridge.core.models import (
    ActionInput,
    BulkSendInput,
    BulkView,
    ChatReplyInput,
    SignerDeparted,
    SigningRequest,
    StatusView,
)
from signbridge.core.temporal import SA_PENDING, SA_PLATFORM, start_bulk, start_signing

# RPC statuses that say "not now" rather than "never": the caller should come back.
TRANSIENT = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED,
                       RPCStatusCode.ABORTED, RPCStatusCode.CANCELLED, RPCStatusCode.INTERNAL, RPCStatusCode.UNKNOWN})
REPLY_WORKFLOW = "ChatReplyWorkflow"
REFUSED_ZH = {"PermissionDenied": "只有发起人或运维人员可以执行此操作"}
REFUSED_ZH_OTHER = "当前状态下无法执行此操作"


def refused(error: WorkflowUpdateFailedError) -> Refused:
    """The validator's (or handler's) `ApplicationError`: its type is the code, its message the English."""
    cause = error.cause
    code = cause.type if isinstance(cause, ApplicationError) and cause.type else "rejected"
    message = cause.message if isinstance(cause, ApplicationError) else str(cause or error)
    return Refused(code=code, zh=REFUSED_ZH.get(code, REFUSED_ZH_OTHER), en=message)


FAILURES = (TimeoutError, RPCError, RPCTimeoutOrCancelledError)  # what a bounded call into Temporal may raise


def _busy(error: BaseException) -> bool:
    if isinstance(error, TimeoutError | RPCTimeoutOrCancelledError):
        return True
    return isinstance(error, RPCError) and error.status in TRANSIENT


def _missing(error: BaseException) -> bool:
    return isinstance(error, RPCError) and error.status == RPCStatusCode.NOT_FOUND


def _busy_or_raise(error: BaseException) -> Busy:
    if _busy(error):
        return Busy()
    raise error


async def start(client: Client, req: SigningRequest, task_queue: str, within: float) -> Outcome:
    """Start the flow once (its id is the request id): `Started`, `Duplicate` or `Busy`."""
    try:
        async with asyncio.timeout(within):
            _, started = await start_signing(client, req, task_queue)
    except FAILURES as e:
        return _busy_or_raise(e)
    return (Started if started else Duplicate)(req.request_id, req.problem)


async def start_bulk_send(client: Client, arg: BulkSendInput, task_queue: str, within: float) -> Outcome:
    """Start the bulk send once (its id is the bulk id): `Started`, `Duplicate` or `Busy`."""
    try:
        async with asyncio.timeout(within):
            _, started = await start_bulk(client, arg, task_queue)
    except FAILURES as e:
        return _busy_or_raise(e)
    return (Started if started else Duplicate)(arg.bulk_id, arg.problem)


async def bulk_progress(client: Client, bulk_id: str, within: float) -> BulkView | Outcome:
    """The bulk send's `progress` query: its view, `NotFound` or `Busy`."""
    try:
        async with asyncio.timeout(within):
            return await client.get_workflow_handle(bulk_id).query("progress", result_type=BulkView)
    except FAILURES as e:
        return await _not_found(client, bulk_id, within) if _missing(e) else _busy_or_raise(e)


async def start_reply(client: Client, arg: ChatReplyInput, workflow_id: str, task_queue: str,
                      within: float) -> Outcome:
    """Start the private answer once (its id comes from the chat event): `Started`, `Duplicate` or `Busy`."""
    try:
        async with asyncio.timeout(within):
            await client.start_workflow(REPLY_WORKFLOW, arg, id=workflow_id, task_queue=task_queue,
                                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    except WorkflowAlreadyStartedError:
        return Duplicate(workflow_id)
    except FAILURES as e:
        return _busy_or_raise(e)
    return Started(workflow_id)


async def _not_found(client: Client, request_id: str, within: float) -> Outcome:
    """After NOT_FOUND: is the flow gone, or has it ended (a running-only call refuses those too)?"""
    try:
        async with asyncio.timeout(within):
            await client.get_workflow_handle(request_id).describe()
    except FAILURES as e:
        return NotFound(request_id) if _missing(e) else _busy_or_raise(e)
    return NotFound(request_id, ended=True)


async def update(client: Client, request_id: str, name: str, arg: ActionInput, update_id: str | None,
                 deadline: Deadline) -> Outcome:
    """Run the update: accepted within `deadline.accept` (else `Busy`), its result awaited
    `deadline.result` more (else `Accepted`). A validator's refusal is `Refused`."""
    handle = client.get_workflow_handle(request_id)
    running: WorkflowUpdateHandle[StatusView] | None = None
    try:
        async with asyncio.timeout(deadline.accept):
            running = await handle.start_update(name, arg, id=update_id or uuid.uuid4().hex, result_type=StatusView,
                                                wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        async with asyncio.timeout(deadline.result):
            view = await running.result()
    except WorkflowUpdateFailedError as e:
        return refused(e)
    except FAILURES as e:
        if running is not None and _busy(e):
            return Accepted(request_id)  # durable already: the flow applies it, the card shows it
        return await _not_found(client, request_id, deadline.accept) if _missing(e) else _busy_or_raise(e)
    return Applied(request_id, view)


async def query_status(client: Client, request_id: str, within: float) -> Outcome:
    """The flow's `status` query: `Applied(view)`, `NotFound` or `Busy` (no worker answered in time)."""
    try:
        async with asyncio.timeout(within):
            view = await client.get_workflow_handle(request_id).query("status", result_type=StatusView)
    except FAILURES as e:
        return await _not_found(client, request_id, within) if _missing(e) else _busy_or_raise(e)
    return Applied(request_id, view)


async def listing(client: Client, query: str, limit: int, within: float) -> list[WorkflowExecution] | Busy:
    """Up to `limit` flows matching the visibility `query`, or `Busy` when Temporal did not answer in time."""
    try:
        async with asyncio.timeout(within):
            return [wf async for wf in client.list_workflows(query, limit=limit)]
    except FAILURES as e:
        return _busy_or_raise(e)


DEPARTED_SIGNAL = "signer_departed"


async def signal_departed(client: Client, platform: str, tenant: str, user_ids: tuple[str, ...],
                          within: float) -> int | Busy:
    """Signal `signer_departed` to each running flow of this platform and tenant that waits for one
    of `user_ids` (its `PendingSigners`); how many flows were told, or `Busy`."""
    if not user_ids:
        return 0
    ids = ", ".join("'" + i.replace("\\", "").replace("'", "") + "'" for i in user_ids)
    query = (f"ExecutionStatus = 'Running' AND {SA_PLATFORM.name} = '{platform}' "
             f"AND {SA_PENDING.name} IN ({ids})")
    prefix = request_id_for(platform, tenant, "")
    told = 0
    try:
        async with asyncio.timeout(within):
            async for wf in client.list_workflows(query, limit=500):
                if not wf.id.startswith(prefix):
                    continue  # the same user id in another tenant is someone else
                pending = set(wf.typed_search_attributes.get(SA_PENDING) or [])
                handle = client.get_workflow_handle(wf.id)
                for user_id in user_ids:
                    if user_id in pending:
                        await handle.signal(DEPARTED_SIGNAL, SignerDeparted(signer_id=user_id, source=platform))
                told += 1
    except FAILURES as e:
        return _busy_or_raise(e)
    return told
