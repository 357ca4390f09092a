"""Route a normalised provider event to its workflow as a signal.

Every provider — the built-in one included — delivers through here, so routing, dedupe and
audit behave the same whichever provider signed.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client

from signbridge.core.models import ProviderEvent
from store.tables import SigningRequestRecord

SIGNAL_NAME = "provider_event"


class UnknownFlow(LookupError):
    pass


def workflow_id_for(engine: Engine, provider: str, flow_id: str) -> str:
    with Session(engine) as session:
        row = session.exec(
            select(SigningRequestRecord).where(
                SigningRequestRecord.provider == provider, SigningRequestRecord.provider_flow_id == flow_id
            )
        ).first()
    if row is None:
        raise UnknownFlow(f"no signing request for {provider} flow {flow_id}")
    return row.request_id


async def deliver(client: Client, engine: Engine, event: ProviderEvent) -> str:
    """Signal the event to its workflow (durable once this returns). Returns the workflow id."""
    workflow_id = workflow_id_for(engine, event.provider, event.flow_id)
    await client.get_workflow_handle(workflow_id).signal(SIGNAL_NAME, event)
    return workflow_id
