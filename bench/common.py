"""Shared bench plumbing: loopback servers, subprocesses, the timed chat sink, open-loop load, stats.

Everything runs on 127.0.0.1 and is started (and stopped) by the bench itself: the Temporal dev
server and time-skipping server from the pip-installed binaries, the API and the worker as
subprocesses (so the worker's RSS is its own), and a chat sink that stamps each arrival.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request, Response
from temporalio.testing import WorkflowEnvironment

from signbridge.core.settings import Settings
from tests.sim.servers import free_port
from tests.sim.webhook_sink import WebhookSink

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-webhook-secret"
LINK_SECRET = "bench-link-secret"
API_KEY = "bench-api-key"


# ---- statistics -------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def ms(seconds: float) -> float:
    return seconds * 1000.0


# ---- Temporal servers -------------------------------------------------------------------------

def target(env: WorkflowEnvironment) -> str:
    return str(env.client.service_client.config.target_host)


# ---- the timed chat sink ----------------------------------------------------------------------

def request_id_of(body: dict[str, Any]) -> str:
    """Bench request ids contain no ':', so the idempotency key's first part is the request id."""
    if body.get("type") == "card.upsert":
        return str(body.get("card_key", ""))
    return str(body.get("idempotency_key", "")).split(":", 1)[0]


class TimedSink(WebhookSink):
    """The test suite's verifying sink, plus a wall-clock arrival time per message, indexed by flow."""

    def __init__(self, secret: str) -> None:
        super().__init__(secret)
        self.by_request: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
        self._watchers: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(list)

    async def _receive(self, request: Request) -> Response:
        resp = await super()._receive(request)
        arrived = time.time()
        if resp.status_code == 200:
            import json

            body = json.loads(await request.body())
            rid = request_id_of(body)
            with self._lock:
                self.by_request[rid].append((arrived, body))
                watchers = list(self._watchers.get(rid, []))
            for loop, ev in watchers:
                loop.call_soon_threadsafe(ev.set)
        return resp

    async def wait(self, rid: str, predicate: Callable[[list[tuple[float, dict[str, Any]]]], Any],
                   timeout: float = 60) -> Any:
        """Wait until `predicate(messages of rid)` is truthy; returns its value."""
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        with self._lock:
            self._watchers[rid].append((loop, ev))
        try:
            async with asyncio.timeout(timeout):
                while True:
                    with self._lock:
                        msgs = list(self.by_request.get(rid, []))
                    found = predicate(msgs)
                    if found:
                        return found
                    ev.clear()
                    await ev.wait()
        finally:
            with self._lock:
                self._watchers[rid].remove((loop, ev))
                if not self._watchers[rid]:
                    del self._watchers[rid]

    async def link(self, rid: str, signer_id: str, timeout: float = 60) -> str:
        def find(msgs: list[tuple[float, dict[str, Any]]]) -> str | None:
            for _, m in msgs:
                if m.get("type") == "message" and m.get("to") == signer_id and m.get("sign_url"):
                    return str(m["sign_url"])
            return None

        url: str = await self.wait(rid, find, timeout)
        return url

    def __enter__(self) -> TimedSink:
        super().__enter__()
        return self

    def forget(self, rid: str) -> None:
        with self._lock:
            self.by_request.pop(rid, None)


# ---- SignBridge processes ---------------------------------------------------------------------

@dataclass
class Stack:
    """Settings shared by the API and worker processes (same data dir, queue and secrets)."""

    settings: Settings
    data_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNBRIDGE_")}
        s = self.settings
        env.update({
            "SIGNBRIDGE_ENVIRONMENT": s.environment,
            "SIGNBRIDGE_DATA_DIR": str(s.data_dir),
            "SIGNBRIDGE_TEMPORAL_ADDRESS": s.temporal_address,
            "SIGNBRIDGE_TASK_QUEUE": s.task_queue,
            "SIGNBRIDGE_WEBHOOK_SECRET": SECRET,
            "SIGNBRIDGE_LINK_SECRET": LINK_SECRET,
            "SIGNBRIDGE_WEBHOOK_OUTBOUND_URL": s.webhook_outbound_url,
            "SIGNBRIDGE_PUBLIC_URL": s.public_url,
            "SIGNBRIDGE_API_KEYS": API_KEY,
            "SIGNBRIDGE_LOG_LEVEL": "WARNING",
            "SIGNBRIDGE_WORKER_METRICS_ADDRESS": "",  # no fixed port: nothing to clash with on a shared box
            "PYTHONPATH": str(ROOT),
        })
        return env


def make_settings(data_dir: Path, temporal_address: str, sink_url: str, task_queue: str | None = None,
                  port: int | None = None) -> Settings:
    port = port or free_port()
    return Settings(
        environment="development",  # a throwaway stack: tables created at start, no migrations
        data_dir=data_dir,
        temporal_address=temporal_address,
        task_queue=task_queue or f"bench-{uuid.uuid4().hex[:8]}",
        webhook_secret=SECRET,  # type: ignore[arg-type]
        link_secret=LINK_SECRET,  # type: ignore[arg-type]
        api_keys=API_KEY,
        webhook_outbound_url=sink_url,
        public_url=f"http://127.0.0.1:{port}",
    )


def _port_of(settings: Settings) -> int:
    return int(settings.public_url.rsplit(":", 1)[1])


@contextmanager
def api_process(stack: Stack, processes: int = 1) -> Iterator[str]:
    """`uvicorn --factory api.main:create_app` on the settings' port (`--workers processes`, as
    `signbridge api` runs it); yields the base URL."""
    port = _port_of(stack.settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log", "--workers", str(processes)],
        cwd=ROOT, env=stack.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"API process exited: {err[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("API process did not become healthy in 60 s")
            time.sleep(0.2)
        yield base
    finally:
        stop(proc)


@contextmanager
def worker_process(stack: Stack, module: str = "worker", args: list[str] | None = None) -> Iterator[
        subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", module, *(args or [])], cwd=ROOT, env=stack.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"{module} exited with {proc.returncode}")
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc."""
    cur = peak = math.nan
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:
        pass
    return cur, peak


# ---- open-loop load ---------------------------------------------------------------------------

@dataclass
class LoadResult:
    rate: float
    duration: float
    latencies: list[float]  # seconds, from the scheduled send time
    errors: int
    first_error: str | None = None

    @property
    def p50(self) -> float:
        return ms(pct(self.latencies, 50))

    @property
    def p99(self) -> float:
        return ms(pct(self.latencies, 99))

    @property
    def achieved(self) -> float:
        return len(self.latencies) / self.duration if self.duration else 0.0


async def open_loop(rate: float, duration: float, call: Callable[[int], Awaitable[Any]],
                    timeout: float = 30.0) -> LoadResult:
    """Fire `call(i)` at a fixed rate regardless of how long earlier calls take (open loop).

    Latency is measured from each request's *scheduled* time, so a backlog shows up as latency
    instead of silently lowering the offered rate.
    """
    loop = asyncio.get_running_loop()
    n = max(1, int(rate * duration))
    start = loop.time() + 0.05
    latencies: list[float] = []
    errors: list[str] = []

    async def one(i: int, scheduled: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await call(i)
            latencies.append(loop.time() - scheduled)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")

    tasks = []
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return LoadResult(rate=rate, duration=n / rate, latencies=latencies, errors=len(errors),
                      first_error=errors[0] if errors else None)
