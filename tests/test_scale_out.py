"""Two worker processes and two API processes against one Temporal server handle each flow once.

Temporal hands every workflow and activity task to one poller, and SignBridge's steps are
idempotent besides; what could still go wrong is SignBridge's own: two API processes racing on
the built-in provider's rows, two workers racing on the shared data dir (CA, tables, blobs), a
chat message sent by both. The first test runs the scale-out bench row's 2 + 2 configuration
(`bench.scale.run_config`: real worker and API subprocesses, real PAdES, the verifying chat
sink) on a few flows and requires every check of that row to hold, with both workers and both
API processes doing part of the work. The second shows that those checks do catch a flow handled
twice, so "no problems" means something.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from bench.common import SECRET, TimedSink, target
from bench.scale import Evidence, check_audit, check_history, check_pdf, check_sink, run_config

HISTORY = Path(__file__).parent / "histories" / "serial-two-signers.json"


async def test_two_workers_and_two_apis_complete_every_flow_once(dev_env: WorkflowEnvironment,
                                                                  tmp_path: Path) -> None:
    with TimedSink(SECRET) as sink:
        run = await run_config(dev_env.client, target(dev_env), sink, tmp_path, workers=2, apis=2, n=4,
                               warmup_per_api=1, log=lambda _msg: None)
    ev = run.evidence
    assert run.completed == 4 and ev.flows == 6 and ev.completed == 6, ev.problems
    assert ev.problem_count == 0 and ev.clean, ev.problems
    assert ev.signatures == 12 and ev.signer_signed == 12 and ev.workflow_signed == 12 and ev.signals == 12
    assert ev.links == 12 and ev.signed_files == 6  # retries (a step run again, same outcome) may happen under load
    tasks = run.tasks_per_worker()
    assert len(tasks) == 2 and all(t > 0 for t in tasks), ev.tasks_by_worker  # both workers took part
    assert sum(tasks) == sum(ev.tasks_by_worker.values())  # and no task was started by anyone else
    assert run.signs_by_api == [4, 4]  # the timed flows' signatures, half through each API process


def _history() -> list[HistoryEvent]:
    return list(WorkflowHistory.from_json("wf", HISTORY.read_text()).events)


def _first(events: list[HistoryEvent], kind: int, marker: str | None = None) -> HistoryEvent:
    return next(e for e in events if e.event_type == kind
                and (marker is None or e.marker_recorded_event_attributes.marker_name == marker))


def test_the_checks_catch_a_flow_handled_twice() -> None:
    clean = Evidence()
    check_history("wf", _history(), 2, clean)
    assert clean.problem_count == 0 and clean.signals == 2 and clean.activities > 0, clean.problems

    events = _history()
    _first(events, EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED).activity_task_started_event_attributes.attempt = 2
    local = _first(events, EventType.EVENT_TYPE_MARKER_RECORDED, "core_local_activity")
    payload = local.marker_recorded_event_attributes.details["data"].payloads[0]
    payload.data = json.dumps({**json.loads(payload.data), "attempt": 3}).encode()
    signal = _first(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
    events.insert(events.index(signal) + 1, signal)  # the same provider event delivered twice
    ev = Evidence()
    check_history("wf", events, 2, ev)
    assert ev.retried == 2 and ev.retry_count == 2, ev.retries  # ran again: work done twice, same outcome
    assert ev.signals == 3 and ev.problem_count == 1 and "3 signals for 2 signers" in ev.problems[0]

    link: dict[str, Any] = {"type": "message", "to": "u-1", "sign_url": "http://x/sign/t", "idempotency_key": "wf:l"}
    other: dict[str, Any] = {"type": "message", "to": "u-2", "sign_url": "http://x/sign/u", "idempotency_key": "wf:m"}
    signed: dict[str, Any] = {"type": "file", "kind": "signed", "to": None, "idempotency_key": "wf:f"}
    card: dict[str, Any] = {"type": "card.upsert", "card_key": "wf", "idempotency_key": "wf:card:1"}
    fine = Evidence()
    check_sink("wf", [card, link, other, signed], ["u-1", "u-2"], fine)
    assert fine.problem_count == 0, fine.problems
    again = Evidence()  # the same messages delivered again under their keys: retries, one link and file each
    check_sink("wf", [card, link, link, other, signed, signed], ["u-1", "u-2"], again)
    assert again.duplicate_keys == 2 and again.retry_count == 1 and again.problem_count == 0, again.problems
    assert again.links == 2 and again.signed_files == 1
    twice = Evidence()  # a second link and a second signed file under keys of their own: handled twice
    check_sink("wf", [card, link, {**link, "idempotency_key": "wf:l2"}, other, signed,
                      {**signed, "idempotency_key": "wf:f2"}], ["u-1", "u-2"], twice)
    assert twice.problem_count == 2 and twice.retry_count == 0, twice.problems

    class Row:
        def __init__(self, action: str, actor: str) -> None:
            self.action, self.actor = action, actor

    audit = Evidence()
    check_audit("wf", [Row("signer.signed", "u-1"), Row("signer.signed", "u-1"), Row("signer.signed", "u-2"),
                       Row("workflow.signed_event", "u-1"), Row("workflow.signed_event", "u-2")], ["u-1", "u-2"], audit)
    assert audit.problem_count == 1 and "2 `signer.signed` audit events for u-1" in audit.problems[0]

    pdf = Evidence()
    check_pdf("wf", ["李四", "王五", "王五"], True, ["李四", "王五"], pdf)
    check_pdf("wf", ["李四", "王五"], False, ["李四", "王五"], pdf)
    assert pdf.problem_count == 2


def _run(workers: int, per_second: float, problems: list[str], busy: float) -> Any:
    from bench.scale import CpuUse, ScaleRun

    ev = Evidence(flows=10, completed=10, signatures=20, signer_signed=20, workflow_signed=20, signals=20,
                  sink_messages=70, links=20, signed_files=10, activities=120,
                  tasks_by_worker={f"{100 + i}@host": 50 for i in range(workers)})
    for text in problems:
        ev.problem(text)
    cpu = CpuUse(wall=10.0, cores=2, workers=busy * 8, apis=busy * 4, bench=0.5, temporal=busy * 6, machine=busy * 20)
    return ScaleRun(workers=workers, apis=workers, flows=8, warmup=2 * workers, seconds=8 / per_second, completed=8,
                    cpu=cpu, evidence=ev, worker_pids=[100 + i for i in range(workers)],
                    signs_by_api=[16 // workers] * workers)


def test_row_7_reports_throughput_the_checks_and_why_it_did_not_grow(tmp_path: Path) -> None:
    """The report's row 7: both configurations, the checks, and a verdict that follows the numbers."""
    from bench.report import Results, load_results, save_results, write_report
    from bench.scale import ScaleResult

    flat = Results(quick=False, started=0.0, machine={},
                   scale=ScaleResult(_run(1, 2.0, [], 0.95), _run(2, 2.1, [], 1.0)))
    save_results(flat, tmp_path / "r.pickle")
    text = write_report(load_results(tmp_path / "r.pickle"))
    assert "## 7. Scale-out: two workers and two API processes" in text
    assert "| 2 + 2 | 2 | 2 | 8/8 | 3.8 | 2.10 | 100% |" in text
    assert "| tasks started per worker process (workflow + activity) | every worker takes part | 50 | 50 + 50 |" in text
    target = next(line for line in text.splitlines() if "throughput grows" in line)
    assert "(1.05×)" in target and "**missed**" in target
    assert "no flow handled twice | 20 flows checked, 0 problems, 0 retries (row 7) | met |" in text
    assert "Throughput did not grow (1.05×): 1 + 1 already kept 95% of the 2 cores busy" in text

    grew = Results(quick=False, started=0.0, machine={},
                   scale=ScaleResult(_run(1, 2.0, [], 0.5), _run(2, 3.0, ["wf: 2 link messages to u-1"], 0.9)))
    text = write_report(grew)
    assert "Throughput grew 1.50× with twice the processes" in text
    assert "throughput grows (≥ 1.1× 1 + 1) | 3.00 vs 2.00 flows/s (1.50×) | met |" in text
    assert "20 flows checked, 1 problems, 0 retries (row 7) | **missed** |" in text
    assert "- wf: 2 link messages to u-1" in text  # the problem is listed under its configuration
