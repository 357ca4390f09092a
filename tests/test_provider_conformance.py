"""Every provider's webhook, through the real API app, against a real Temporal dev server.

Parametrised over the `CASE` of every module in `tests/provider_cases/` (see its docstring for
the contract). A tiny recording workflow stands in for `SigningWorkflow`: it keeps every signal
it receives and, like the real one, dedupes by `event_id`, so the tests see both what reached
Temporal and what would take effect.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlmodel import Session, select
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

import tests.provider_cases
from api.main import create_app
from signbridge.core.models import ProviderEvent
from signbridge.core.settings import Settings
from store.db import get_engine
from store.tables import AuditEvent, SigningRequestRecord
from tests.provider_cases import Delivery, ProviderCase


def _cases() -> list[ProviderCase]:
    found = []
    for info in pkgutil.iter_modules(tests.provider_cases.__path__):
        module = importlib.import_module(f"tests.provider_cases.{info.name}")
        found.append(module.CASE)
    return sorted(found, key=lambda c: c.name)


CASES = _cases()


@workflow.defn(name="RecordingWorkflow")
class RecordingWorkflow:
    def __init__(self) -> None:
        self.received: list[ProviderEvent] = []
        self.effective: list[ProviderEvent] = []

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name="provider_event")
    def provider_event(self, event: ProviderEvent) -> None:
        self.received.append(event)
        if all(e.event_id != event.event_id for e in self.effective):
            self.effective.append(event)

    @workflow.query(name="events")
    def events(self) -> tuple[list[ProviderEvent], list[ProviderEvent]]:
        return self.received, self.effective


@dataclass
class Rig:
    case: ProviderCase
    client: Client
    http: httpx.AsyncClient
    settings: Settings

    async def flow(self) -> tuple[str, WorkflowHandle[RecordingWorkflow, None]]:
        """A signing-request row routing `flow_id` to a fresh recording workflow."""
        request_id, flow_id = f"conf:{uuid.uuid4().hex[:10]}", f"flow-{uuid.uuid4().hex[:10]}"
        with Session(get_engine(self.settings.sqlalchemy_url)) as session:
            session.add(SigningRequestRecord(request_id=request_id, title="t", provider=self.case.name,
                                             provider_flow_id=flow_id, chat_platform="webhook", chat_id="g",
                                             source_event_id=request_id, card_key=request_id, initiator_id="u-0"))
            session.commit()
        handle = await self.client.start_workflow(RecordingWorkflow.run, id=request_id,
                                                  task_queue=self.settings.task_queue)
        return flow_id, handle

    async def post(self, delivery: Delivery) -> httpx.Response:
        headers, body = delivery
        return await self.http.post(f"/esign/{self.case.name}/webhook", headers=headers, content=body)

    def audits(self, request_id: str) -> list[AuditEvent]:
        with Session(get_engine(self.settings.sqlalchemy_url)) as session:
            return list(session.exec(select(AuditEvent).where(AuditEvent.request_id == request_id)).all())

    def assert_reply(self, resp: httpx.Response) -> None:
        status, body = self.case.reply
        assert resp.status_code == status, resp.text
        if body is not None:
            assert resp.content == body


async def _events(handle: WorkflowHandle[RecordingWorkflow, None]) -> tuple[list[ProviderEvent], list[ProviderEvent]]:
    received, effective = await handle.query(RecordingWorkflow.events)
    return ([ProviderEvent.model_validate(e) for e in received],  # type: ignore[arg-type]
            [ProviderEvent.model_validate(e) for e in effective])  # type: ignore[arg-type]


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
async def rig(request: pytest.FixtureRequest, dev_env: WorkflowEnvironment, settings: Settings,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    case: ProviderCase = request.param
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    app = create_app(settings, dev_env.client)
    async with Worker(dev_env.client, task_queue=settings.task_queue, workflows=[RecordingWorkflow],
                      workflow_runner=UnsandboxedWorkflowRunner()), app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://signbridge.test") as http:
        yield Rig(case=case, client=dev_env.client, http=http, settings=settings)


async def test_valid_deliveries_reach_the_workflow_once(rig: Rig) -> None:
    for kind in rig.case.kinds:
        flow_id, handle = await rig.flow()
        first = rig.case.valid(flow_id, "u-1", kind)
        rig.assert_reply(await rig.post(first))
        rig.assert_reply(await rig.post(first))  # the same delivery again
        rig.assert_reply(await rig.post(rig.case.valid(flow_id, "u-1", kind)))  # a redelivery, made anew
        received, effective = await _events(handle)
        assert len(received) == 3 and len(effective) == 1
        event = effective[0]
        assert (event.provider, event.flow_id, event.kind, event.signer_id) == (rig.case.name, flow_id, kind, "u-1")
        assert event.raw, "the raw payload is kept"
        assert {e.event_id for e in received} == {event.event_id}
        audits = rig.audits(handle.id)  # the raw payload is in the audit trail, once per event
        assert [(a.action, a.key) for a in audits] == [(f"provider.{kind}", f"webhook:{event.event_id}")]
        assert json.loads(audits[0].detail)["raw"]


async def test_forged_missing_and_stale_signatures_are_refused(rig: Rig) -> None:
    flow_id, handle = await rig.flow()
    makers = [rig.case.tampered, rig.case.unsigned] + ([rig.case.stale] if rig.case.stale else [])
    for make in makers:
        resp = await rig.post(make(flow_id, "u-1", "signed"))
        assert resp.status_code == 401, resp.text
    rig.assert_reply(await rig.post(rig.case.valid(flow_id, "u-1", "signed")))
    received, _ = await _events(handle)
    assert [e.kind for e in received] == ["signed"]  # only the genuine one got through
    assert len(rig.audits(handle.id)) == 1


async def test_unknown_event_types_are_acknowledged_and_ignored(rig: Rig) -> None:
    flow_id, handle = await rig.flow()
    rig.assert_reply(await rig.post(rig.case.unknown(flow_id)))
    rig.assert_reply(await rig.post(rig.case.valid(flow_id, "u-1", "signed")))
    received, _ = await _events(handle)
    assert [e.kind for e in received] == ["signed"]


async def test_events_for_unknown_flows_are_acknowledged(rig: Rig) -> None:
    rig.assert_reply(await rig.post(rig.case.valid("no-such-flow", "u-1", "signed")))

