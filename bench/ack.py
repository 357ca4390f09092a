"""Row 1 — callback acknowledgement: `POST /im/webhook/events` vs a bare `start_workflow`.

Both sides run open loop at the same rates from this process. The API runs as its own uvicorn
server on a task queue no worker polls, and so does the baseline's empty workflow: what is
measured is verification + durable start, not execution. Each rate is measured against one API
process and against N (= cores, the shipped `SIGNBRIDGE_API_PROCESSES` default), both next to the
bare start measured at that rate in the same run.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from temporalio.client import Client

from bench.common import SECRET, LoadResult, open_loop
from connectors.chat.webhook import signature as webhook_signature

MENTIONS = [{"id": "u-1", "name": "李四"}, {"id": "u-2", "name": "王五"}]


def command_body(event_id: str) -> bytes:
    body: dict[str, Any] = {
        "event_id": event_id,
        "type": "message",
        "chat": {"id": "g-1", "kind": "group"},
        "sender": {"id": "u-0", "name": "张三", "email": "zs@corp.example"},
        "text": "/sign @李四 > @王五",
        "mentions": MENTIONS,
        "files": [{"name": "contract.pdf", "url": "http://127.0.0.1:9/f/contract.pdf"}],
    }
    return json.dumps(body, ensure_ascii=False).encode()


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=500, max_keepalive_connections=100))


async def callback(http: httpx.AsyncClient, api: str, tag: str) -> None:
    raw = command_body(f"{tag}-{uuid.uuid4().hex[:12]}")
    resp = await http.post(f"{api}/im/webhook/events", content=raw,
                           headers={**webhook_signature.headers(SECRET, raw), "Content-Type": "application/json"})
    if resp.status_code != 202:
        raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")


async def callback_load(http: httpx.AsyncClient, api: str, rate: float, duration: float, tag: str) -> LoadResult:
    return await open_loop(rate, duration, lambda i: callback(http, api, tag))


async def bare_start_load(client: Client, queue: str, rate: float, duration: float) -> LoadResult:
    async def start(i: int) -> None:
        await client.start_workflow("BenchEmpty", id=f"bench-empty-{uuid.uuid4().hex[:16]}", task_queue=queue)

    return await open_loop(rate, duration, start)


@dataclass
class AckRow:
    rate: float
    signbridge: LoadResult
    baseline: LoadResult
    processes: int = 1  # API processes behind the port (results saved before this field: one)


async def run(client: Client, apis: dict[int, str], noworker_queue: str, rates: list[float], duration: float,
              log: Any = print) -> list[AckRow]:
    """`apis`: base URL by number of API processes. One baseline per rate, then each API at it."""
    rows = []
    async with http_client() as http:
        # warm every path (connections, imports, each process's caches) before measuring
        for api in apis.values():
            await callback_load(http, api, 10, 1.0, "warm")
        await bare_start_load(client, noworker_queue, 10, 1.0)
        for rate in rates:
            base = await bare_start_load(client, noworker_queue, rate, duration)
            log(f"  ack baseline {rate:>5.0f}/s: p50 {base.p50:.1f} ms p99 {base.p99:.1f} ms errors {base.errors}")
            for processes, api in sorted(apis.items()):
                sb = await callback_load(http, api, rate, duration, f"ack{int(rate)}p{processes}")
                log(f"  ack signbridge {rate:>3.0f}/s, {processes} API process(es): p50 {sb.p50:.1f} ms "
                    f"p99 {sb.p99:.1f} ms errors {sb.errors}" + (f" ({sb.first_error})" if sb.first_error else ""))
                rows.append(AckRow(rate, sb, base, processes))
    return rows
