"""Row 7 — scale-out: the same load on 1 worker + 1 API process, then on 2 workers + 2 API processes.

Both configurations run against one Temporal dev server (started for this row alone, so no
other row's flows share it) and each against one SQLite data dir, as a deployment with several
processes on one machine would. The load is row 2's: `n` two-signer serial flows (李四 then 王五)
on the built-in provider, started at once; each signer signs on the signing page as soon as
their link reaches the chat sink. With two API processes the signing-page POSTs alternate
between them (flow i goes to API i mod 2), so each API makes half of the PAdES signatures; the
two workers share one task queue and Temporal hands each task to whichever polls first.

A few warm-up flows per API process run first and are not timed (the first signature in a
process loads the CA and cuts the stamp font's subset), but they are checked like the others.

Throughput alone says nothing about correctness, so after the timed part every flow is checked
for being handled twice (`check_flows`): one COMPLETED close each, two valid signatures by the
two signers in the final PDF, one `signer.signed` and one `workflow.signed_event` audit event per
signer, one signal per signer, one link per signer and one signed file in the chat (counted per
idempotency key). Repeats that change no outcome are counted apart, as retries, with their
cause: an activity or local activity not done at its first attempt, a workflow task that failed
or timed out, a message the sink accepted twice under the same idempotency key. The histories
also say which worker process ran each task (the worker's identity is `pid@host`), which shows
that both workers took part.

Where the CPU went during the timed part is measured from /proc (each process tree's user +
system time, and the whole machine's busy time), so a ratio that does not grow says why.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.common import SECRET, Stack, TimedSink, api_process, make_settings, target, worker_process
from bench.flows import SIGNERS, contract_key, drive_serial, start_flow
from signbridge.core.models import StatusView
from signbridge.core.settings import Settings
from tests.temporal_servers import dev_server

SIGNER_PAIR = [SIGNERS[0], SIGNERS[1]]
WARMUP_PER_API = 2
MAX_PROBLEMS = 20  # listed in the report; the count is always complete

_TASK_TROUBLE = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED: "workflow task failed",
    EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT: "workflow task timed out",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity failed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity timed out",
}


# ---- CPU accounting from /proc ------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # after "pid (comm) ": state is fields[0]


def _tree(pid: int) -> list[int]:
    """`pid` and every live descendant (a signing pool's processes count with their parent)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = _stat_fields(entry.name)
            if f:
                children.setdefault(int(f[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process tree so far, reaped children included (cutime, cstime)."""
    total = 0
    for p in _tree(pid):
        f = _stat_fields(p)
        if f:
            total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    return total / _TICK


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in first[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / _TICK, sum(ticks) / _TICK


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _children_with(pred: Any) -> list[int]:
    """This process's children whose command line (a list of arguments) satisfies `pred`."""
    found = []
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(entry.name) if entry.name.isdigit() else None
        if fields is None or int(fields[1]) != os.getpid():
            continue
        try:
            args = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if pred(args):
            found.append(int(entry.name))
    return found


def api_pids(urls: list[str]) -> list[int]:
    """The uvicorn processes behind `urls`, by their `--port` (`api_process` yields only the URL)."""
    ports = {u.rsplit(":", 1)[1] for u in urls}

    def serves(args: list[str]) -> bool:
        return "--port" in args and args.index("--port") + 1 < len(args) and args[args.index("--port") + 1] in ports

    return _children_with(serves)


def dev_server_pids() -> list[int]:
    """The Temporal dev server this process started (`temporal server start-dev`)."""
    return _children_with(lambda args: "start-dev" in args and Path(args[0]).name.startswith("temporal"))


@dataclass
class CpuUse:
    """CPU seconds spent during the timed part, by whom; `wall` × `cores` is what there was."""

    wall: float
    cores: int
    workers: float
    apis: float
    bench: float  # this process: the load generator and the chat sink
    temporal: float  # the Temporal dev server
    machine: float  # every process on the machine
    worker_tree: list[int] = field(default_factory=list)  # processes per worker (itself + its pool), at the end
    api_tree: list[int] = field(default_factory=list)  # the same per API process

    @property
    def other(self) -> float:
        """Anything else on the machine (nothing, on a machine that runs only the bench)."""
        return max(0.0, self.machine - self.workers - self.apis - self.bench - self.temporal)

    def share(self, seconds: float) -> float:
        return seconds / (self.wall * self.cores) if self.wall else 0.0


class _CpuMeter:
    def __init__(self, workers: list[int], apis: list[int], temporal: list[int]) -> None:
        self.workers, self.apis, self.temporal = workers, apis, temporal
        self._start = self._read()
        self._t = time.monotonic()

    def _read(self) -> tuple[float, ...]:
        return (sum(tree_cpu_seconds(p) for p in self.workers), sum(tree_cpu_seconds(p) for p in self.apis),
                self_cpu_seconds(), sum(tree_cpu_seconds(p) for p in self.temporal), machine_busy_seconds()[0])

    def stop(self) -> CpuUse:
        end = self._read()
        d = [b - a for a, b in zip(self._start, end, strict=True)]
        return CpuUse(wall=time.monotonic() - self._t, cores=os.cpu_count() or 1, workers=d[0], apis=d[1],
                      bench=d[2], temporal=d[3], machine=d[4], worker_tree=[len(_tree(p)) for p in self.workers],
                      api_tree=[len(_tree(p)) for p in self.apis])


# ---- the evidence that no flow was handled twice ------------------------------------------------

@dataclass
class Evidence:
    """What the checks found over every flow of one configuration.

    `problems` are outcomes a flow handled twice (or not at all) would leave: a flow not COMPLETED
    once, a signer with two signatures, signed events or links, a second signed file. `retries`
    are repeats that change no outcome: an activity that ran again after an attempt failed or
    timed out, a workflow task that timed out, a message posted again with the same idempotency
    key (a receiver acts on a key once, as the webhook IM protocol asks). Clean = no problems.
    """

    flows: int = 0
    completed: int = 0
    signatures: int = 0  # valid signatures in the final PDFs, by the flow's own signers
    signer_signed: int = 0  # `signer.signed` audit events (the signing page)
    workflow_signed: int = 0  # `workflow.signed_event` audit events (the workflow took the signature)
    signals: int = 0
    sink_messages: int = 0
    duplicate_keys: int = 0  # idempotency keys accepted more than once at the sink (a retry)
    links: int = 0  # link messages, one per idempotency key
    signed_files: int = 0  # signed-file messages, one per idempotency key
    activities: int = 0  # regular + local activity executions in the histories
    retried: int = 0  # of which not done at their first attempt
    task_trouble: int = 0  # workflow tasks failed/timed out, activities failed/timed out
    tasks_by_worker: dict[str, int] = field(default_factory=dict)  # identity → workflow + activity tasks
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    retries: list[str] = field(default_factory=list)
    retry_count: int = 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def retry(self, text: str) -> None:
        self.retry_count += 1
        if len(self.retries) < MAX_PROBLEMS:
            self.retries.append(text)

    @property
    def clean(self) -> bool:
        return self.problem_count == 0 and self.flows > 0 and self.completed == self.flows


def _marker_attempt(event: Any) -> tuple[str, int] | None:
    """(activity type, attempt) of a local activity's marker; None for other markers (patches)."""
    attrs = event.marker_recorded_event_attributes
    if attrs.marker_name != "core_local_activity":
        return None
    payloads = attrs.details["data"].payloads
    data = json.loads(payloads[0].data) if payloads else {}
    return str(data.get("activity_type", "?")), int(data.get("attempt", 0))


def check_history(rid: str, events: list[Any], signers: int, ev: Evidence) -> None:
    """One flow's history: one close (COMPLETED), one signal per signer, every activity at attempt 1,
    no failed or timed-out task; counts which worker identity started each task."""
    kinds = Counter(e.event_type for e in events)
    closes = sum(kinds[k] for k in (EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
                                    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
                                    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
                                    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
                                    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
                                    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW))
    if kinds[EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED] != 1 or closes != 1:
        ev.problem(f"{rid}: {closes} close events, {kinds[EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED]} "
                   "COMPLETED")
    signals = kinds[EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    ev.signals += signals
    if signals != signers:
        ev.problem(f"{rid}: {signals} signals for {signers} signers")
    for kind, what in _TASK_TROUBLE.items():
        if kinds[kind]:
            ev.task_trouble += kinds[kind]
            ev.retry(f"{rid}: {what} ×{kinds[kind]} ({_trouble_detail(events, kind)})")
    scheduled: dict[int, str] = {}
    for e in events:
        identity = ""
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            identity = e.workflow_task_started_event_attributes.identity
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = e.activity_task_started_event_attributes
            identity = a.identity
            ev.activities += 1
            if a.attempt != 1:
                ev.retried += 1
                why = a.last_failure.message[:300] if a.HasField("last_failure") else "?"
                ev.retry(f"{rid}: activity {scheduled.get(a.scheduled_event_id, '?')} ran at attempt {a.attempt} "
                           f"(the attempt before failed: {why})")
        elif e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            local = _marker_attempt(e)
            if local:
                ev.activities += 1
                if local[1] != 1:
                    ev.retried += 1
                    ev.retry(f"{rid}: local activity {local[0]} ran at attempt {local[1]}")
        if identity:
            ev.tasks_by_worker[identity] = ev.tasks_by_worker.get(identity, 0) + 1


def _trouble_detail(events: list[Any], kind: int) -> str:
    """Why the first such event happened: a workflow task's timeout type, an activity's failure."""
    from temporalio.api.enums.v1 import TimeoutType

    e = next(e for e in events if e.event_type == kind)
    if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
        return TimeoutType.Name(e.workflow_task_timed_out_event_attributes.timeout_type)
    if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
        return e.workflow_task_failed_event_attributes.failure.message[:300]
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
        return e.activity_task_failed_event_attributes.failure.message[:300]
    return TimeoutType.Name(e.activity_task_timed_out_event_attributes.timeout_type)


def check_sink(rid: str, messages: list[dict[str, Any]], signer_ids: list[str], ev: Evidence) -> None:
    """One link per signer, one signed file, one card (each counted once per idempotency key); a
    key accepted more than once is a retry."""
    ev.sink_messages += len(messages)
    keys = Counter(str(m.get("idempotency_key")) for m in messages)
    twice = {k: c for k, c in keys.items() if c > 1}
    if twice:
        ev.duplicate_keys += len(twice)
        ev.retry(f"{rid}: posted again with the same idempotency key: {sorted(twice.items())[:3]}")
    for sid in signer_ids:
        links = {str(m.get("idempotency_key")) for m in messages
                 if m.get("type") == "message" and m.get("to") == sid and m.get("sign_url")}
        ev.links += len(links)
        if len(links) != 1:
            ev.problem(f"{rid}: {len(links)} link messages to {sid}")
    files = {str(m.get("idempotency_key")) for m in messages
             if m.get("type") == "file" and m.get("kind") == "signed" and not m.get("to")}
    ev.signed_files += len(files)
    if len(files) != 1:
        ev.problem(f"{rid}: {len(files)} signed files posted to the chat")
    cards = {m.get("card_key") for m in messages if m.get("type") == "card.upsert"}
    if cards != {rid}:
        ev.problem(f"{rid}: cards {sorted(str(c) for c in cards)}")


def check_audit(rid: str, rows: list[Any], signer_ids: list[str], ev: Evidence) -> None:
    """One `signer.signed` (the page) and one `workflow.signed_event` (the workflow) per signer."""
    for action, attr in (("signer.signed", "signer_signed"), ("workflow.signed_event", "workflow_signed")):
        by = Counter(r.actor for r in rows if r.action == action)
        setattr(ev, attr, getattr(ev, attr) + sum(by.values()))
        for sid in signer_ids:
            if by.get(sid, 0) != 1:
                ev.problem(f"{rid}: {by.get(sid, 0)} `{action}` audit events for {sid}")


def check_pdf(rid: str, names: list[str], all_valid: bool, expected: list[str], ev: Evidence) -> None:
    """One valid signature per signer, in signing order, and nothing else."""
    if all_valid:
        ev.signatures += sum(1 for n in names if n in expected)
    if names != expected or not all_valid:
        ev.problem(f"{rid}: final PDF signed by {names} (valid: {all_valid}), expected {expected}")


async def check_flows(client: Client, settings: Settings, sink: TimedSink, ids: list[str]) -> Evidence:
    """Every check named in the module docstring, over the flows `ids` (already finished)."""
    from signbridge.pdf.pades import validate_pdf
    from signbridge.pdf.pki import InstallationCA
    from store import audit
    from store.blob_factory import make_blob_store
    from store.db import get_engine

    ev = Evidence(flows=len(ids))
    engine = get_engine(settings.sqlalchemy_url)
    blobs = make_blob_store(settings)
    ca = InstallationCA.load_or_create(settings.data_dir / "ca")
    signer_ids = [p.id for p in SIGNER_PAIR]
    names = [p.name for p in SIGNER_PAIR]
    for rid in ids:
        handle = client.get_workflow_handle(rid, result_type=StatusView)
        history = await handle.fetch_history()
        check_history(rid, list(history.events), len(SIGNER_PAIR), ev)
        view = await handle.result()
        if view.status != "COMPLETED" or view.signed_document is None:
            ev.problem(f"{rid}: ended {view.status}")
            continue
        ev.completed += 1
        pdf = blobs.get(view.signed_document.blob_key)
        reports = await asyncio.to_thread(validate_pdf, pdf, [ca.certificate])
        check_pdf(rid, [r.signer_name for r in reports], all(r.intact and r.valid and r.trusted for r in reports),
                  names, ev)
        check_audit(rid, await asyncio.to_thread(audit.trail_of, engine, rid), signer_ids, ev)
        with sink._lock:
            messages = [body for _, body in sink.by_request.get(rid, [])]
        check_sink(rid, messages, signer_ids, ev)
    return ev


# ---- one configuration --------------------------------------------------------------------------

@dataclass
class ScaleRun:
    workers: int
    apis: int
    flows: int  # timed flows
    warmup: int
    seconds: float
    completed: int  # of the timed flows
    cpu: CpuUse
    evidence: Evidence
    worker_pids: list[int]
    signs_by_api: list[int]
    error: str | None = None

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def tasks_per_worker(self) -> list[int]:
        """Workflow + activity tasks each worker process started, in the order they were started."""
        ident = self.evidence.tasks_by_worker
        return [sum(c for i, c in ident.items() if i.split("@", 1)[0] == str(pid)) for pid in self.worker_pids]


@dataclass
class ScaleResult:
    single: ScaleRun
    multi: ScaleRun

    @property
    def ratio(self) -> float:
        return self.multi.per_second / self.single.per_second if self.single.per_second else 0.0


async def _drive(client: Client, settings: Settings, sink: TimedSink, http: httpx.AsyncClient,
                 apis: list[str], n: int, tag: str, signs: list[int]) -> list[tuple[str, bool]]:
    """Start `n` flows at once; flow i's signers sign through API i mod len(apis)."""

    async def one(i: int) -> tuple[str, bool]:
        handle = await start_flow(client, settings, [[SIGNER_PAIR[0]], [SIGNER_PAIR[1]]], tag)
        which = i % len(apis)
        view = await drive_serial(handle, sink, http, apis[which], SIGNER_PAIR)
        signs[which] += len(SIGNER_PAIR)
        return handle.id, view.status == "COMPLETED"

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} flows failed to run: {type(errors[0]).__name__}: {errors[0]}")
    return [r for r in results if not isinstance(r, BaseException)]


def _stacks(root: Path, target: str, sink_url: str, apis: int) -> list[Stack]:
    """One settings per API process (its own port), all on one data dir and one task queue."""
    queue = f"bench-scale-{uuid.uuid4().hex[:8]}"
    first = make_settings(root, target, sink_url, task_queue=queue)
    out = [Stack(first, root)]
    for _ in range(apis - 1):
        other = make_settings(root, target, sink_url, task_queue=queue)
        out.append(Stack(other, root))
    return out


def _prepare_data_dir(settings: Settings) -> None:
    """Create what every process would otherwise race to create on first use: the installation CA
    (two processes creating it at once would sign with different keys), the tables, the contract."""
    from signbridge.pdf.pki import InstallationCA
    from store.db import create_all, get_engine

    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    InstallationCA.load_or_create(settings.data_dir / "ca")
    create_all(get_engine(settings.sqlalchemy_url))
    contract_key(settings)


async def _until_polling(client: Client, queue: str, pids: list[int], timeout: float = 120) -> None:
    """Wait until every worker process polls the queue for workflow and activity tasks (Temporal
    lists its pollers by identity, `pid@host`), so each one can take part from the first flow."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    wanted = {str(pid) for pid in pids}
    end = time.monotonic() + timeout
    while True:
        seen: list[set[str]] = []
        for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
            resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind))
            seen.append({p.identity.split("@", 1)[0] for p in resp.pollers})
        if all(wanted <= s for s in seen):
            return
        if time.monotonic() > end:
            raise RuntimeError(f"worker processes {sorted(wanted)} not all polling {queue} after {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def _start_apis(procs: ExitStack, stacks: list[Stack]) -> list[str]:
    """Start the API processes side by side (each waits until it is healthy) and leave their stopping
    to `procs`; the data dir was prepared before, so they do not race to create it."""
    cms = [api_process(s) for s in stacks]
    started = await asyncio.gather(*(asyncio.to_thread(cm.__enter__) for cm in cms), return_exceptions=True)
    for cm, got in zip(cms, started, strict=True):
        if not isinstance(got, BaseException):
            procs.push(cm)
    failed = [got for got in started if isinstance(got, BaseException)]
    if failed:
        raise failed[0]
    return [str(u) for u in started]


async def run_config(client: Client, target: str, sink: TimedSink, root: Path, workers: int, apis: int, n: int,
                     warmup_per_api: int = WARMUP_PER_API, log: Any = print) -> ScaleRun:
    """Start the processes, warm each API up, time `n` flows, check every flow, stop the processes."""
    stacks = _stacks(root, target, sink.url, apis)
    settings = stacks[0].settings
    await asyncio.to_thread(_prepare_data_dir, settings)
    signs = [0] * apis
    with ExitStack() as procs:
        urls = await _start_apis(procs, stacks)
        apis_at = api_pids(urls)
        worker_procs = [procs.enter_context(worker_process(stacks[0])) for _ in range(workers)]
        await _until_polling(client, settings.task_queue, [p.pid for p in worker_procs])
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=400)) as http:
            warm = await _drive(client, settings, sink, http, urls, warmup_per_api * apis, f"scw{workers}", signs)
            signs[:] = [0] * apis
            meter = _CpuMeter([p.pid for p in worker_procs], apis_at, dev_server_pids())
            t0 = time.monotonic()
            timed = await _drive(client, settings, sink, http, urls, n, f"sc{workers}", signs)
            seconds = time.monotonic() - t0
            cpu = meter.stop()
        ids = [rid for rid, _ in warm] + [rid for rid, _ in timed]
        evidence = await check_flows(client, settings, sink, ids)
        for rid in ids:
            sink.forget(rid)
        run = ScaleRun(workers=workers, apis=apis, flows=n, warmup=len(warm), seconds=seconds,
                       completed=sum(1 for _, ok in timed if ok), cpu=cpu, evidence=evidence,
                       worker_pids=[p.pid for p in worker_procs], signs_by_api=signs)
    log(f"  {workers} worker(s) + {apis} API(s): {run.completed}/{n} in {seconds:.1f} s = "
        f"{run.per_second:.2f} flows/s; machine {cpu.share(cpu.machine):.0%} busy; "
        f"{evidence.problem_count} problems, {evidence.retry_count} retries; tasks per worker {run.tasks_per_worker()}")
    return run


async def run(root: Path, n: int, warmup_per_api: int = WARMUP_PER_API, log: Any = print) -> ScaleResult:
    """Both configurations, one after the other, against one dev server started for this row."""
    async with dev_server() as env:
        with TimedSink(SECRET) as sink:
            single = await run_config(env.client, target(env), sink, root / "one", 1, 1, n, warmup_per_api, log)
            multi = await run_config(env.client, target(env), sink, root / "two", 2, 2, n, warmup_per_api, log)
    return ScaleResult(single, multi)
