"""The one Temporal client factory and the handful of calls the API makes into Temporal.

`api/` and `worker.py` both build their client here so they share the data converter and
namespace. Every inbound request becomes one of: a workflow start (id derived from the source
event, so a redelivered callback is a no-op), a signal (provider events) or an update
(chat actions that need a yes/no answer).
"""

from __future__ import annotations

from datetime import datetime

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import Runtime

from signbridge.core import metrics
from signbridge.core.models import BulkSendInput, BulkView, SigningRequest, SignStatus, StatusView
from signbridge.core.search_attributes import keyword
from signbridge.core.settings import Settings

WORKFLOW_NAME = "SigningWorkflow"
BULK_WORKFLOW_NAME = "BulkSendWorkflow"

SA_STATUS = SearchAttributeKey.for_keyword("SignStatus")
SA_PROVIDER = SearchAttributeKey.for_keyword("SignProvider")
SA_PLATFORM = SearchAttributeKey.for_keyword("ChatPlatform")
SA_INITIATOR = SearchAttributeKey.for_keyword("SignInitiator")
SA_DOCUMENT = SearchAttributeKey.for_keyword("DocumentSha256")
SA_PENDING = SearchAttributeKey.for_keyword_list("PendingSigners")
SA_DEADLINE = SearchAttributeKey.for_datetime("SignDeadline")

# name -> type, as `temporal server start-dev --search-attribute name=Type` wants them.
SEARCH_ATTRIBUTES: dict[str, str] = {
    "SignStatus": "Keyword",
    "SignProvider": "Keyword",
    "ChatPlatform": "Keyword",
    "SignInitiator": "Keyword",
    "DocumentSha256": "Keyword",
    "PendingSigners": "KeywordList",
    "SignDeadline": "Datetime",
}


PROVIDER_ACTIVITIES = ("create_flow", "open_group", "poll", "poll_flow", "revoke", "remind", "finish",
                       "replace_signer")

# Providers whose events reach the workflow durably without a webhook: the built-in provider stores
# every event first (`local_events`) and delivers it in-process; what a live delivery misses the
# worker's relay (`signbridge/intake/relay.py`) signals again until it arrives. Their flows never
# poll on a timer.
DURABLE_DELIVERY_PROVIDERS = frozenset({"local"})


def provider_task_queue(task_queue: str, provider: str) -> str:
    """The task queue of the activities that call `provider`'s API.

    One queue per provider lets the worker cap that queue's activities per second across every
    worker process (Temporal enforces `max_task_queue_activities_per_second` server-side), so
    SignBridge stays inside each provider's API quota however many flows are running.
    """
    return f"{task_queue}.provider.{provider}"


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )


def initial_search_attributes(req: SigningRequest) -> TypedSearchAttributes:
    """Fitted to Temporal's limits (`signbridge.search_attributes`): a 3,000-character initiator id
    must not make Temporal refuse the start."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_STATUS, SignStatus.PREPARING.value),
            SearchAttributePair(SA_PROVIDER, keyword(req.provider)),
            SearchAttributePair(SA_PLATFORM, keyword(req.chat.platform)),
            SearchAttributePair(SA_INITIATOR, keyword(req.initiator.id)),
        ]
    )


async def start_signing(client: Client, req: SigningRequest, task_queue: str) -> tuple[WorkflowHandle, bool]:
    """Start the flow once. Returns (handle, started); `started` is False for a duplicate."""
    try:
        handle = await client.start_workflow(
            WORKFLOW_NAME,
            req,
            id=req.request_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=initial_search_attributes(req),
            static_summary=f"{req.title} — {req.initiator.name}",
            result_type=StatusView,
        )
        metrics.flow_started(req.chat.platform, req.provider)
        return handle, True
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(req.request_id, result_type=StatusView), False


async def start_bulk(client: Client, arg: BulkSendInput, task_queue: str) -> tuple[WorkflowHandle, bool]:
    """Start a bulk send once (its id is the bulk id). Returns (handle, started)."""
    try:
        handle = await client.start_workflow(
            BULK_WORKFLOW_NAME, arg, id=arg.bulk_id, task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(SA_PLATFORM, keyword(arg.chat.platform)),
                SearchAttributePair(SA_INITIATOR, keyword(arg.initiator.id)),
                SearchAttributePair(SA_PROVIDER, keyword(arg.provider))]),
            static_summary=f"批量发送 / bulk send: {arg.title} — {arg.initiator.name}", result_type=BulkView)
        return handle, True
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(arg.bulk_id, result_type=BulkView), False


def deadline_pair(deadline: datetime) -> SearchAttributePair[datetime]:
    return SearchAttributePair(SA_DEADLINE, deadline)


__all__ = [
    "BULK_WORKFLOW_NAME",
    "SEARCH_ATTRIBUTES",
    "WORKFLOW_NAME",
    "WithStartWorkflowOperation",
    "WorkflowIDConflictPolicy",
    "connect",
    "start_bulk",
    "start_signing",
]
