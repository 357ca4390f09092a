"""Row 3 — cost per flow: history events and billable actions per completed flow.

Runs on the time-skipping test server (days pass in milliseconds) with the real worker, the
real API app (signing pages over ASGI) and the built-in provider, via the test suite's harness.
Billable actions are counted the way Temporal Cloud bills them: the start, each signal, each
accepted update, each activity attempt, each timer and each search-attribute upsert.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from bench.baseline import FlowShape, baseline_worker
from signbridge.core.models import Person, Timing
from signbridge.core.settings import Settings
from tests.harness import Harness, harness

A = Person(id="u-1", name="李四")
B = Person(id="u-2", name="王五")
C = Person(id="x-9", name="客户A", email="a@customer.example", external=True)

# Per reminder, a waiting flow writes: the timer (started, fired), the workflow task that wakes
# (scheduled, started, completed) and the send_link local activity's marker.
EVENTS_PER_REMINDER = 6
# The polling fallback's activity: `poll` in flows recorded before quiet waits, `poll_flow` since.
POLL_ACTIVITIES = ("poll", "poll_flow")
# The row the 30-day target is about (≤ 1.3× the flow signed at once plus its reminders).
THIRTY_DAYS = "2 serial, shipped defaults, last signs after 30 days"
WAIT_TARGET = 1.3

_BILLABLE = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED: "starts",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signals",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "updates",
    EventType.EVENT_TYPE_TIMER_STARTED: "timers",
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: "upserts",
}


@dataclass
class Cost:
    name: str
    status: str
    events: int
    actions: dict[str, int] = field(default_factory=dict)
    activities_by_type: dict[str, int] = field(default_factory=dict)
    reminders: int = 0
    polls: int = 0
    baseline_events: int | None = None
    baseline_actions: int | None = None

    @property
    def billable(self) -> int:
        return sum(self.actions.values())


def _local_activity(event: Any) -> tuple[str, int] | None:
    """(activity type, attempts) of a local activity's marker; None for any other event."""
    if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
        return None
    attrs = event.marker_recorded_event_attributes
    if attrs.marker_name != "core_local_activity":
        return None
    data = json.loads(attrs.details["data"].payloads[0].data)
    return str(data["activity_type"]), max(1, int(data.get("attempt") or 1))


async def measure(handle: WorkflowHandle[Any, Any], name: str) -> Cost:
    history = await handle.fetch_history()
    actions = {k: 0 for k in ("starts", "signals", "updates", "activities", "timers", "upserts")}
    by_type: dict[str, int] = {}
    for e in history.events:
        kind = _BILLABLE.get(e.event_type)
        if kind:
            actions[kind] += 1
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            actions["activities"] += max(1, e.activity_task_started_event_attributes.attempt)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            t = e.activity_task_scheduled_event_attributes.activity_type.name
            by_type[t] = by_type.get(t, 0) + 1
        if (local := _local_activity(e)) is not None:  # one marker per local activity, all attempts in it
            t, attempts = local
            actions["activities"] += attempts
            by_type[t] = by_type.get(t, 0) + 1
    desc = await handle.describe()
    status = desc.status.name if desc.status else "?"
    return Cost(name=name, status=status, events=len(history.events), actions=actions, activities_by_type=by_type)


async def _wait_reminders(h: Harness, handle: WorkflowHandle[Any, Any], people: list[Person], each: int) -> None:
    def count() -> int:
        return sum(len([m for m in h.links_for(handle, p) if m.get("text") and "提醒" in m["text"]])
                   for p in people)

    await h.sink.wait_for(lambda: count() >= each * len(people), timeout=30)


async def _flow(env: WorkflowEnvironment, h: Harness, name: str, groups: list[list[Person]], t: Timing,
                wait_per_group: timedelta | None = None, reminders_per_wait: int = 0,
                wait_before_last: timedelta | None = None, reminders_before_last: int = 0) -> Cost:
    handle = await h.start(groups, timing=t)
    for gi, group in enumerate(groups):
        for p in group:
            await h.link(handle, p)
        if wait_per_group:
            await env.sleep(wait_per_group)
            await _wait_reminders(h, handle, group, reminders_per_wait)
        if wait_before_last and gi == len(groups) - 1:
            await env.sleep(wait_before_last)
            if reminders_before_last:
                await _wait_reminders(h, handle, group, reminders_before_last)
        for p in group:
            await h.sign(handle, p)
    await handle.result()
    cost = await measure(handle, name)
    signers = sum(len(g) for g in groups)
    cost.reminders = cost.activities_by_type.get("send_link", 0) - signers
    cost.polls = sum(cost.activities_by_type.get(t, 0) for t in POLL_ACTIVITIES)
    return cost


async def _baseline(env: WorkflowEnvironment, h: Harness, cost: Cost, signers: int) -> None:
    """The same number of signals and activities in a bare workflow (no timers, no upserts)."""
    queue = f"cost-base-{uuid.uuid4().hex[:6]}"
    activities = cost.actions["activities"]
    after = 3
    before = max(0, activities - 3 * signers - after)
    rid = f"bench-costbase-{uuid.uuid4().hex[:10]}"
    ids = [f"s{i}" for i in range(signers)]
    async with baseline_worker(env.client, queue, h.sink.url, h.settings.webhook_secret.get_secret_value()):
        handle = await env.client.start_workflow(
            "BenchFlow", FlowShape(request_id=rid, signers=ids, before=before, after=after), id=rid, task_queue=queue)
        for sid in ids:
            await h.sink.wait_for(lambda sid=sid: any(  # type: ignore[misc]
                m.get("to") == sid and str(m.get("idempotency_key", "")).startswith(rid) for m in h.sink.messages),
                timeout=30)
            await handle.signal("signed", sid)
        await handle.result()
    base = await measure(handle, "baseline")
    cost.baseline_events = base.events
    cost.baseline_actions = base.billable


def scenarios(h: Harness, quick: bool) -> list[dict[str, Any]]:
    no_rem = h.timing(reminder_max=0, deadline=timedelta(days=10))
    rem_hourly = h.timing(reminder_first_after=timedelta(hours=1), reminder_every=timedelta(hours=1),
                          reminder_max=3, deadline=timedelta(days=10))
    defaults = h.timing(deadline=timedelta(days=10))  # reminders 24 h / 24 h / 3, polling off (webhooks)
    # Everything as shipped (`Timing()`: poll_after 1 h, 6 quiet polls at most, step retry window…),
    # only the deadline moved past the wait.
    shipped_10_days = Timing(deadline=timedelta(days=10))
    shipped_31_days = Timing(deadline=timedelta(days=31))
    week = timedelta(days=7)
    out: list[dict[str, Any]] = [
        dict(name="2 serial, no reminders", groups=[[A], [B]], t=no_rem),
        dict(name="2 serial, reminders on, signed at once", groups=[[A], [B]], t=defaults),
        dict(name="2 serial, reminders on, last signs after 7 days", groups=[[A], [B]], t=defaults,
             wait_before_last=week, reminders_before_last=3),
        dict(name=THIRTY_DAYS, groups=[[A], [B]], t=shipped_31_days, wait_before_last=timedelta(days=30),
             reminders_before_last=3),
    ]
    if not quick:
        out[1:1] = [
            dict(name="2 parallel, no reminders", groups=[[A, B]], t=no_rem),
            dict(name="3 groups, no reminders", groups=[[A], [B], [C]], t=no_rem),
            dict(name="2 serial, 3 hourly reminders each", groups=[[A], [B]], t=rem_hourly,
                 wait_per_group=timedelta(hours=4), reminders_per_wait=3),
            dict(name="2 parallel, 3 hourly reminders each", groups=[[A, B]], t=rem_hourly,
                 wait_per_group=timedelta(hours=4), reminders_per_wait=3),
            dict(name="3 groups, 3 hourly reminders each", groups=[[A], [B], [C]], t=rem_hourly,
                 wait_per_group=timedelta(hours=4), reminders_per_wait=3),
        ]
        out.insert(-1, dict(name="2 serial, shipped defaults, last signs after 7 days", groups=[[A], [B]],
                            t=shipped_10_days, wait_before_last=week, reminders_before_last=3))
    return out


async def run(data_dir: Path, quick: bool, log: Any = print) -> list[Cost]:
    from tests.temporal_servers import time_skipping_server

    settings = Settings(environment="development", data_dir=data_dir,
                        webhook_secret="bench-webhook-secret",  # type: ignore[arg-type]
                        link_secret="bench-link-secret",  # type: ignore[arg-type]
                        task_queue=f"cost-{uuid.uuid4().hex[:8]}")
    costs = []
    async with time_skipping_server() as env, harness(env, settings) as h:
        for sc in scenarios(h, quick):
            name = sc.pop("name")
            cost = await _flow(env, h, name, **sc)
            await _baseline(env, h, cost, sum(len(g) for g in sc["groups"]))
            log(f"  cost {name}: {cost.events} events, {cost.billable} actions {cost.actions}, "
                f"reminders {cost.reminders}, polls {cost.polls}; baseline {cost.baseline_events} events")
            costs.append(cost)
    return costs
