"""Row 2 — end-to-end throughput: completed two-signer flows per second under a fixed load.

`n` flows (two serial signers on the built-in provider: real PAdES signatures, real validation
of the signed file) are started at once; each signer signs on the signing page as soon as their
link reaches the chat sink. Throughput = n / (time from the first start to the last COMPLETED).
Baseline: `BenchFlow` with the same activities (no-ops) and the same two signals, driven the
same way (link at the sink → signal).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
from temporalio.client import Client

from bench.common import TimedSink
from bench.flows import SIGNERS, drive_baseline, drive_serial, start_baseline, start_flow
from signbridge.core.settings import Settings


@dataclass
class E2EResult:
    flows: int
    seconds: float
    completed: int

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


async def run_signbridge(client: Client, settings: Settings, sink: TimedSink, api: str, n: int) -> E2EResult:
    signers = [[SIGNERS[0]], [SIGNERS[1]]]
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=200)) as http:
        t0 = time.monotonic()

        async def one() -> bool:
            handle = await start_flow(client, settings, signers, "e2e")
            view = await drive_serial(handle, sink, http, api, [SIGNERS[0], SIGNERS[1]])
            sink.forget(handle.id)
            return view.status.value == "COMPLETED"

        results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        seconds = time.monotonic() - t0
    return E2EResult(n, seconds, sum(1 for r in results if r is True))


async def run_baseline(client: Client, settings: Settings, sink: TimedSink, n: int) -> E2EResult:
    t0 = time.monotonic()

    async def one() -> bool:
        handle = await start_baseline(client, settings, 2, "e2ebase")
        await drive_baseline(handle, sink, 2)
        sink.forget(handle.id)
        return True

    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    return E2EResult(n, time.monotonic() - t0, sum(1 for r in results if r is True))


async def run(client: Client, settings: Settings, sink: TimedSink, api: str, n: int,
              log: Any = print) -> tuple[E2EResult, E2EResult]:
    base = await run_baseline(client, settings, sink, n)
    log(f"  e2e baseline: {base.completed}/{n} in {base.seconds:.1f} s = {base.per_second:.2f} flows/s")
    sb = await run_signbridge(client, settings, sink, api, n)
    log(f"  e2e signbridge: {sb.completed}/{n} in {sb.seconds:.1f} s = {sb.per_second:.2f} flows/s")
    return sb, base
