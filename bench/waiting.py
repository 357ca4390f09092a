"""Row 4 — scale of waiting: N flows open and waiting for a signature at the same time.

N one-signer flows are started (open loop, `start_rate`/s) and each runs until its signer's link
is in the chat: then all N are waiting. Measured: the worker process's RSS (now and peak), the
API's callback p99 at 50 requests/s while they wait, and the time to complete all N once the
signatures arrive (each signer signs on the built-in provider's page: real PAdES, then the
flow validates and delivers the signed file). Baseline: N `BenchFlow`s (one signal each) in
the baseline worker process, its RSS, and the time to complete them once the signals arrive.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import Client

from bench.ack import callback_load
from bench.common import LoadResult, TimedSink, open_loop, rss_mb
from bench.flows import SIGNERS, sign_via_page, start_baseline, start_flow, timing
from signbridge.core.settings import Settings


def _patience(n: int) -> float:
    """Seconds to wait for any one flow: with N in the thousands, a flow started early in the
    open loop may reach its link only after most of the others (the machine opens ~10/s)."""
    return max(600.0, n / 4)


async def _open_all(n: int, rate: float, start: Callable[[int], Awaitable[None]], pid: int) -> tuple[float, float]:
    """Open `n` flows open loop at `rate`, in two halves; (seconds taken, worker RSS at the half).

    RSS is read at two quiet points — half the flows waiting, then all — so the slope per flow
    excludes one-time costs (imports, caches, the allocator's high-water mark of the opening burst).
    """
    t0 = time.monotonic()
    half = n // 2
    await open_loop(rate, half / rate, start, timeout=_patience(n))
    await asyncio.sleep(2)
    warm = rss_mb(pid)[0]
    await open_loop(rate, (n - half) / rate, start, timeout=_patience(n))
    await asyncio.sleep(2)
    return time.monotonic() - t0, warm


@dataclass
class WaitResult:
    n: int
    setup_seconds: float
    rss_mb: float
    peak_rss_mb: float
    idle_rss_mb: float
    ack: LoadResult | None
    complete_seconds: float
    completed: int
    warm_rss_mb: float = 0.0  # RSS when the first tenth were waiting: the slope excludes one-time costs
    warm_n: int = 0

    @property
    def kib_per_flow(self) -> float:
        return (self.rss_mb - self.warm_rss_mb) / max(1, self.n - self.warm_n) * 1024


def _completed(msgs: list[tuple[float, dict[str, Any]]]) -> bool:
    return any(m.get("type") == "card.upsert" and m["card"].get("status") == "COMPLETED" for _, m in msgs)


async def run_signbridge(client: Client, settings: Settings, sink: TimedSink, api: str, ack_api: str,
                         worker: subprocess.Popen[bytes], n: int, start_rate: float, ack_seconds: float,
                         sign_concurrency: int = 6, log: Any = print) -> WaitResult:
    a = SIGNERS[0]
    idle, _ = rss_mb(worker.pid)
    t = timing(poll_after=timedelta(days=30))  # provider events arrive by webhook; no polling
    handles: list[Any] = []
    links: dict[str, str] = {}

    async def start(i: int) -> None:
        h = await start_flow(client, settings, [[a]], "wait", t)
        handles.append(h)
        links[h.id] = await sink.link(h.id, a.id, timeout=_patience(n))

    setup, warm = await _open_all(n, start_rate, start, worker.pid)
    rss, peak = rss_mb(worker.pid)
    log(f"  waiting: {len(links)}/{n} flows waiting after {setup:.1f} s; worker RSS {rss:.0f} MiB "
        f"(peak {peak:.0f}, idle {idle:.0f})")
    ack = None
    if ack_seconds > 0:
        async with httpx.AsyncClient(timeout=30) as http:
            ack = await callback_load(http, ack_api, 50, ack_seconds, "waitack")
        log(f"  waiting: callback at 50/s meanwhile p50 {ack.p50:.1f} ms p99 {ack.p99:.1f} ms errors {ack.errors}")
    sem = asyncio.Semaphore(sign_concurrency)
    t1 = time.monotonic()
    async with httpx.AsyncClient(timeout=120) as http:

        async def finish(h: Any) -> bool:
            async with sem:
                await sign_via_page(http, api, links[h.id], a)
            await sink.wait(h.id, _completed, timeout=_patience(n))
            sink.forget(h.id)
            return True

        results = await asyncio.gather(*(finish(h) for h in handles if h.id in links), return_exceptions=True)
    done = time.monotonic() - t1
    rss2, peak2 = rss_mb(worker.pid)
    ok = sum(1 for r in results if r is True)
    log(f"  waiting: {ok}/{n} completed {done:.1f} s after the signatures began; RSS now {rss2:.0f} MiB")
    return WaitResult(n, setup, rss, max(peak, peak2), idle, ack, done, ok, warm, n // 2)


async def run_baseline(client: Client, settings: Settings, sink: TimedSink, worker: subprocess.Popen[bytes],
                       n: int, start_rate: float, log: Any = print) -> WaitResult:
    idle, _ = rss_mb(worker.pid)
    handles: list[Any] = []

    async def start(i: int) -> None:
        h = await start_baseline(client, settings, 1, "waitbase")
        handles.append(h)
        await sink.link(h.id, SIGNERS[0].id, timeout=_patience(n))

    setup, warm = await _open_all(n, start_rate, start, worker.pid)
    rss, peak = rss_mb(worker.pid)
    t1 = time.monotonic()
    sem = asyncio.Semaphore(50)

    async def finish(h: Any) -> bool:
        # The result wait stays inside the semaphore: 10,000 concurrent result long-polls were more
        # than the dev server answered (only 1,221 of 10,000 completed in the first full-scale run).
        async with sem:
            await h.signal("signed", SIGNERS[0].id)
            await h.result()
        sink.forget(h.id)
        return True

    results = await asyncio.gather(*(finish(h) for h in handles), return_exceptions=True)
    done = time.monotonic() - t1
    ok = sum(1 for r in results if r is True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        log(f"  waiting baseline: {len(failures)} not completed, first: {failures[0]!r}")
    log(f"  waiting baseline: {n} waiting after {setup:.1f} s, RSS {rss:.0f} MiB (idle {idle:.0f}); "
        f"{ok} completed in {done:.1f} s")
    return WaitResult(n, setup, rss, peak, idle, None, done, ok, warm, n // 2)


@dataclass
class CappedResult:
    n: int
    cap: int
    setup_seconds: float
    rss_mb: float
    idle_rss_mb: float
    waiting: int
    warm_rss_mb: float = 0.0
    warm_n: int = 0

    @property
    def kib_per_flow(self) -> float:
        return (self.rss_mb - self.warm_rss_mb) / max(1, self.n - self.warm_n) * 1024


async def run_capped(client: Client, settings: Settings, sink: TimedSink, worker: subprocess.Popen[bytes],
                     cap: int, n: int, start_rate: float, log: Any = print) -> CappedResult:
    """The suggested fix for RSS: the same N flows on a worker whose sticky cache holds only `cap`.

    Memory only: the flows are terminated afterwards (completing them is the main measurement's job).
    """
    a = SIGNERS[0]
    idle, _ = rss_mb(worker.pid)
    t = timing(poll_after=timedelta(days=30))
    handles: list[Any] = []
    waiting = 0

    async def start(i: int) -> None:
        nonlocal waiting
        h = await start_flow(client, settings, [[a]], "capped", t)
        handles.append(h)
        await sink.link(h.id, a.id, timeout=_patience(n))
        waiting += 1

    setup, warm = await _open_all(n, start_rate, start, worker.pid)
    rss, _ = rss_mb(worker.pid)
    log(f"  waiting, cache capped at {cap}: {waiting}/{n} waiting after {setup:.1f} s; worker RSS {rss:.0f} MiB "
        f"(idle {idle:.0f})")
    sem = asyncio.Semaphore(50)

    async def end(h: Any) -> None:
        async with sem:
            await h.terminate("bench: capped-cache measurement done")
        sink.forget(h.id)

    await asyncio.gather(*(end(h) for h in handles), return_exceptions=True)
    return CappedResult(n, cap, setup, rss, idle, waiting, warm, n // 2)
