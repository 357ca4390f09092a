"""Route a normalised provider event to its workflow as a signal.

Every provider — the built-in one included — delivers through here, so routing, dedupe and
audit behave the same whichever provider signed.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from signbridge.core.models import ProviderEvent
from store.repos import signing_records

SIGNAL_NAME = "provider_event"


class UnknownFlow(LookupError):
    pass


class FlowEnded(LookupError):
    """The flow has already closed: a late event (a revocation confirmed after a cancel, a
    redelivery after completion) has nothing left to change, so it is acknowledged, not retried."""


def workflow_id_for(engine: Engine, provider: str, flow_id: str) -> str:
    request_id = signing_records.workflow_for_flow(engine, provider, flow_id)
    if request_id is None:
        raise UnknownFlow(f"no signing request for {provider} flow {flow_id}")
    return request_id


async def deliver(client: Client, engine: Engine, event: ProviderEvent) -> str:
    """Signal the event to its workflow (durable once this returns). Returns the workflow id."""
    workflow_id = workflow_id_for(engine, event.provider, event.flow_id)
    try:
        await client.get_workflow_handle(workflow_id).signal(SIGNAL_NAME, event)
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:  # "workflow execution already completed"
            raise FlowEnded(f"signing request {workflow_id} has ended") from e
        raise
    return workflow_id
