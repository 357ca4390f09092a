"""Quiet waits: a waiting flow costs nothing while it waits, with the shipped defaults.

The built-in provider delivers its events durably (the signing page, then the worker's relay for
what the page could not deliver), so its flows never poll on a timer. An external provider's flow
polls as a fallback only until its webhooks are confirmed — a webhook for the flow itself, or a
poll that learns the provider's webhooks arrive — at most `max_quiet_polls` quiet polls in a row,
and once more at the deadline before it would expire, so a lost webhook never loses a signature.
Time-skipping server, the real worker, activities, API and built-in provider; DocuSeal's simulator
over real HTTP for an external provider.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from signbridge.core.models import Person, Timing
from signbridge.core.settings import Settings
from signbridge.intake.relay import DeliveryRelay
from store.db import get_engine
from store.repos import local_flows, webhooks_seen
from store.tables import LocalEvent, utcnow
from tests.harness import A, B, Harness, harness
from tests.provider_cases import E2E
from tests.sim.servers import free_port
from tests.test_docuseal import FLOW as DOCUSEAL

# The shipped defaults (poll_after 1 h, reminders after 1, 2 and 3 days, 6 quiet polls), with a
# deadline beyond the wait.
SHIPPED_31_DAYS = Timing(deadline=timedelta(days=31))
# Per reminder a waiting flow writes its timer (started, fired), the workflow task that wakes
# (scheduled, started, completed) and the send_link marker (bench/cost.py).
EVENTS_PER_REMINDER = 6
POLLS = ("poll", "poll_flow")


async def _polls(handle: WorkflowHandle[Any, Any]) -> list[datetime]:
    """When each poll of the provider was scheduled."""
    history = await handle.fetch_history()
    return [e.event_time.ToDatetime(tzinfo=UTC) for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name in POLLS]


async def _events(handle: WorkflowHandle[Any, Any]) -> int:
    return len((await handle.fetch_history()).events)


async def _record(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With SIGNBRIDGE_RECORD_HISTORIES=1, keep this run's history for tests/test_replay.py."""
    if os.environ.get("SIGNBRIDGE_RECORD_HISTORIES") == "1":
        history = await handle.fetch_history()
        (Path(__file__).parent / "histories" / f"{name}.json").write_text(history.to_json())


def _reminders(h: Harness, handle: WorkflowHandle[Any, Any], person: Person) -> int:
    return len([m for m in h.links_for(handle, person) if "提醒" in (m.get("text") or "")])


# ---- the built-in provider ------------------------------------------------------------------


async def test_a_built_in_flow_waits_30_days_with_the_shipped_defaults_without_polling(
        ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        at_once = await h.start([[A], [B]], timing=SHIPPED_31_DAYS)
        await h.sign(at_once, A)
        await h.sign(at_once, B)
        assert (await at_once.result()).status == "COMPLETED"

        waited = await h.start([[A], [B]], timing=SHIPPED_31_DAYS)
        await h.sign(waited, A)
        await h.link(waited, B)
        await ts_env.sleep(timedelta(days=30))
        await h.sink.wait_for(lambda: _reminders(h, waited, B) >= 3, timeout=30)
        await h.sign(waited, B)
        view = await waited.result()
        assert view.status == "COMPLETED" and view.events_seen == 2
        assert _reminders(h, waited, B) == 3
        await _record(waited, "quiet-waits-built-in-30-days")

        assert await _polls(waited) == [] and await _polls(at_once) == []
        signed_at_once, after_30_days = await _events(at_once), await _events(waited)
        # Waiting costs the reminders, nothing that grows with time (target: ≤ 1.3×).
        assert after_30_days <= signed_at_once + 3 * EVENTS_PER_REMINDER, (after_30_days, signed_at_once)


async def test_a_failed_live_delivery_is_redelivered_by_the_relay(
        ts_env: WorkflowEnvironment, settings: Settings) -> None:
    """The API process cannot reach Temporal: the signing page stores each signature and its event
    but cannot signal it. The worker's relay delivers both; the flow completes without a poll."""
    unreachable = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True,
                                       data_converter=pydantic_data_converter)
    settings = settings.model_copy(update={"delivery_relay_seconds": 0.5})
    async with harness(ts_env, settings, api_client=unreachable) as h:
        engine = get_engine(h.settings.sqlalchemy_url)
        handle = await h.start([[A], [B]], timing=Timing())
        await h.sign(handle, A)  # 200 for the signer although the delivery failed
        await h.link(handle, B, timeout=60)  # B's turn: A's signature reached the flow, by the relay
        flow_id = str((await h.status(handle)).provider_flow_id)
        [signed_a] = local_flows.events(engine, flow_id)
        assert signed_a.delivered_at is not None and signed_a.delivery_attempts >= 1

        await h.sign(handle, B)
        view = await h.wait_status(handle, "COMPLETED", timeout=60)  # in real time: no time skipped
        assert view.events_seen == 2 and view.signed_document is not None
        assert all(e.delivered_at is not None and e.delivery_attempts >= 1
                   for e in local_flows.events(engine, flow_id))
        assert await _polls(handle) == []

        # An event for a flow that has ended has nowhere to go: the relay marks it done.
        late = LocalEvent(event_id=f"{flow_id}:late", flow_id=flow_id, kind="locked", signer_id=B.id,
                          occurred_at=utcnow() - timedelta(minutes=1))
        assert local_flows.add_event(engine, late)
        relay = DeliveryRelay(h.client, engine, 0.5)
        for _ in range(100):
            await relay.relay_once()
            row = local_flows.event(engine, late.event_id)
            if row is not None and row.delivered_at is not None:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the relay never settled an event of an ended flow")


async def test_two_workers_relays_deliver_an_event_once(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    """Every worker process runs a relay over the same table: each attempt is claimed by one."""
    unreachable = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True,
                                       data_converter=pydantic_data_converter)
    settings = settings.model_copy(update={"delivery_relay_seconds": 3600.0})  # the harness's own relay idles
    async with harness(ts_env, settings, api_client=unreachable) as h:
        engine = get_engine(h.settings.sqlalchemy_url)
        handle = await h.start([[A], [B]], timing=Timing())
        await h.sign(handle, A)
        flow_id = str((await h.status(handle)).provider_flow_id)
        [event] = local_flows.events(engine, flow_id)
        assert event.delivered_at is None  # the page could not deliver it

        later = utcnow() + timedelta(seconds=5)
        one, two = DeliveryRelay(h.client, engine, 0.1), DeliveryRelay(h.client, engine, 0.1)
        settled = await asyncio.gather(one.relay_once(later), two.relay_once(later))
        assert sorted(settled) == [0, 1]
        await h.link(handle, B, timeout=30)
        history = await handle.fetch_history()
        signals = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
        assert len(signals) == 1
        row = local_flows.event(engine, event.event_id)
        assert row is not None and row.delivered_at is not None and row.delivery_attempts == 1


# ---- an external provider (DocuSeal's simulator) --------------------------------------------


EA, EB = DOCUSEAL.people  # with emails: DocuSeal identifies signers by them


async def _flow_id(rig: E2E, handle: WorkflowHandle[Any, Any]) -> str:
    view = await rig.wait(handle, lambda v: v.provider_flow_id is not None and v.status.value == "IN_PROGRESS")
    return str(view.provider_flow_id)


async def test_a_confirmed_flow_does_not_poll_and_a_lost_webhook_is_caught_at_the_deadline(
        ts_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    async with DOCUSEAL.run(ts_env, settings, monkeypatch) as (rig, at):
        handle = await rig.start([[EA], [EB]], poll_after=timedelta(hours=1), reminder_max=0)
        flow_id = await _flow_id(rig, handle)
        await rig.sink.wait_for(lambda: bool(rig.links(handle, EA)), timeout=20)
        await at.sign(flow_id, EA)  # its webhook reaches the flow: confirmed
        await rig.sink.wait_for(lambda: bool(rig.links(handle, EB)), timeout=20)
        await ts_env.sleep(timedelta(days=3))
        assert await _polls(handle) == []  # three days, not one poll

        at.sim.mute = True  # from now on the provider's webhooks are lost
        await at.sign(flow_id, EB)
        view = await rig.result(handle)  # time skips to the deadline: the last poll finds B's signature
        assert view.status.value == "COMPLETED"
        polls = await _polls(handle)
        assert len(polls) == 1 and view.deadline is not None and polls[0] >= view.deadline
        await _record(handle, "quiet-waits-confirmed-deadline-poll")


async def test_an_unconfirmed_flow_stops_after_the_quiet_poll_cap(
        ts_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    async with DOCUSEAL.run(ts_env, settings, monkeypatch) as (rig, at):
        at.sim.mute = True  # no webhook ever arrives, for any flow
        handle = await rig.start([[EA]], poll_after=timedelta(hours=1), deadline=timedelta(days=30),
                                 reminder_max=0)
        await _flow_id(rig, handle)
        view = await rig.result(handle)
        assert view.status.value == "EXPIRED"
        polls = await _polls(handle)
        # 1, 2, 4, 8, 16 and 24 hours apart, then none until the one at the deadline (the old
        # rule: one a day for a month, ~34).
        assert len(polls) == Timing().max_quiet_polls + 1, polls
        assert view.deadline is not None and polls[-1] >= view.deadline
        assert polls[-2] - polls[0] < timedelta(days=3)
        await _record(handle, "quiet-waits-poll-cap")


async def test_a_poll_learns_that_the_providers_webhooks_work(
        ts_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    async with DOCUSEAL.run(ts_env, settings, monkeypatch) as (rig, at):
        engine = get_engine(rig.settings.sqlalchemy_url)
        assert webhooks_seen.last_verified(engine, "docuseal") is None
        other = await rig.start([[EB]])
        other_flow = await _flow_id(rig, other)
        await rig.sink.wait_for(lambda: bool(rig.links(other, EB)), timeout=20)
        await at.sign(other_flow, EB)  # a verified webhook from DocuSeal, for another flow
        await rig.result(other)
        assert webhooks_seen.last_verified(engine, "docuseal") is not None

        handle = await rig.start([[EA]], poll_after=timedelta(hours=1), reminder_max=0)
        await _flow_id(rig, handle)
        view = await rig.result(handle)  # nobody signs
        assert view.status.value == "EXPIRED"
        polls = await _polls(handle)
        # The first fallback poll learns DocuSeal's webhooks arrive; then only the deadline's.
        assert len(polls) == 2 and view.deadline is not None and polls[1] >= view.deadline
