"""`signbridge api` with several processes on one port (`SIGNBRIDGE_API_PROCESSES`, default: cores).

A real uvicorn with two worker processes, the real dev server: signed webhook callbacks on fresh
connections are answered 202 by both processes (each process's Prometheus file names its pid and
counts what it answered), `GET /metrics` from any process sums them all, and the playground's
transcript numbers entries from the shared file whichever process appends.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from temporalio.testing import WorkflowEnvironment

from api.playground.transcript import Transcript
from bench.ack import command_body
from connectors.chat.webhook import signature as webhook_signature
from signbridge.core.settings import Settings
from tests.sim.servers import free_port

SECRET = "test-webhook-secret"
CALLBACKS = 20
MAX_CALLBACKS = 400


def _children(pid: int) -> set[int]:
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.add(int(fields["Pid"].strip()))
    return found


def _answered_by_pid(folder: Path) -> Counter[int]:
    """202 callbacks counted in each process's own multiprocess metrics file."""
    counts: Counter[int] = Counter()
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _metric, sample, labels, *_ = json.loads(key)
            if (sample == "signbridge_http_requests_total" and labels.get("route") == "/im/webhook/events"
                    and labels.get("status") == "202"):
                counts[pid] += int(value)
    return counts


def _sum_of(metrics_text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith("signbridge_http_requests_total{") and 'route="/im/webhook/events"' in line
               and 'status="202"' in line)


async def test_two_api_processes_both_answer_callbacks_and_metrics_add_up(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNBRIDGE_", "PROMETHEUS_"))}
    env.update({"SIGNBRIDGE_ENVIRONMENT": "development", "SIGNBRIDGE_DATA_DIR": str(settings.data_dir),
                "SIGNBRIDGE_WEBHOOK_SECRET": SECRET, "SIGNBRIDGE_WEBHOOK_OUTBOUND_URL": "http://127.0.0.1:9/sink",
                "SIGNBRIDGE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
                "SIGNBRIDGE_TASK_QUEUE": settings.task_queue + "-nobody", "SIGNBRIDGE_API_PROCESSES": "2"})
    port = free_port()
    log = settings.data_dir.parent / "api.log"  # uvicorn's own lines: a replaced process says so
    proc = subprocess.Popen([sys.executable, "-m", "signbridge.cli.main", "api", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    base = f"http://127.0.0.1:{port}"
    try:
        # a new connection per request, so the kernel hands them to whichever process accepts first
        async with httpx.AsyncClient(base_url=base, timeout=30,
                                     limits=httpx.Limits(max_keepalive_connections=0)) as http:
            for _ in range(300):
                try:
                    if (await http.get("/healthz")).status_code == 200 and len(_children(proc.pid)) >= 2:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, log.read_text()[-2000:]
                await asyncio.sleep(0.1)
            workers = _children(proc.pid)
            assert len(workers) >= 2, workers

            async def callback(i: int) -> int:
                raw = command_body(f"procs-{i}")
                resp = await http.post("/im/webhook/events", content=raw, headers={
                    **webhook_signature.headers(SECRET, raw), "Content-Type": "application/json"})
                return resp.status_code

            # One at a time: each new connection is a race between idle processes, which both win
            # some (a burst is swallowed by whichever process wakes first). Bounded, never timed.
            sent, by_pid = 0, Counter[int]()
            while sent < MAX_CALLBACKS and len([n for n in by_pid.values() if n]) < 2:
                for _ in range(CALLBACKS):
                    assert await callback(sent) == 202
                    sent += 1
                by_pid = _answered_by_pid(settings.data_dir / "api-metrics")
            assert sum(by_pid.values()) == sent
            serving = {pid for pid, n in by_pid.items() if n}
            assert len(serving) >= 2 and serving <= workers, (by_pid, workers)
            assert _sum_of((await http.get("/metrics")).text) == sent  # every process's count, from any
            # the flows exist in Temporal, whichever process started them
            handle = dev_env.client.get_workflow_handle("sign:webhook:default:procs-7")
            assert (await handle.describe()).id == "sign:webhook:default:procs-7"
            assert "died" not in log.read_text()  # no process was replaced while starting or serving
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def test_the_transcript_numbers_entries_from_the_file_whichever_process_appends(tmp_path: Path) -> None:
    """Two `Transcript`s on one folder stand for two API processes: each sees the other's entries,
    numbers its own after them, and a follower in one wakes for an entry appended by the other."""
    one, two = Transcript(tmp_path / "playground"), Transcript(tmp_path / "playground")
    assert one.append("said", text="a")["seq"] == 1
    assert two.append("said", text="b")["seq"] == 2  # not 1: `two` read `one`'s entry first
    assert [e["text"] for e in one.since(0)] == ["a", "b"]
    follower = asyncio.create_task(one.wait(2, timeout=10))
    await asyncio.sleep(0.05)
    assert not follower.done()
    two.append("outbound", body={"idempotency_key": "k-1"})
    await asyncio.wait_for(follower, 2)  # within FOLLOW_POLL, not the 10 s timeout
    third = one.get(3)
    assert third is not None and third["kind"] == "outbound" and one.seen("k-1")
    lines = (tmp_path / "playground" / "transcript.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]


def test_api_processes_share_the_cores_for_signing_unless_told(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every API process has its own signing pool: N processes × one child per core would only
    add memory, so `signbridge api` gives each its share of the cores."""
    from signbridge.cli import api_startup

    for name in (api_startup.SIGNING_ENV, api_startup.METRICS_ENV, api_startup.OWN_LOGGING, api_startup.ACCESS_LOG):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    settings = Settings(environment="production", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/x.db")
    api_startup.prepare(settings, 4, access_log=False, own_logging=True)
    assert os.environ[api_startup.SIGNING_ENV] == "2"
    assert Settings().signing_processes == 2  # what each uvicorn process reads at start
    api_startup.prepare(settings, 16, access_log=False, own_logging=True)
    assert os.environ[api_startup.SIGNING_ENV] == "1"  # never none

    monkeypatch.setenv(api_startup.SIGNING_ENV, "3")
    told = Settings(environment="production", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/x.db")
    api_startup.prepare(told, 4, access_log=False, own_logging=True)
    assert os.environ[api_startup.SIGNING_ENV] == "3"  # an operator's choice stands
