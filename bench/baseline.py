"""The raw-Temporal baselines: the least a workflow doing the same shape of work can cost.

- `BenchEmpty`: an empty workflow (row 1's bare `start_workflow`).
- `BenchFlow`: the signing flow's skeleton — the same number of activities before, between and
  after the same number of signals — with activities that do nothing, except the one that
  stands in for "send the signer their link" and (optionally) "update the card": those POST a
  signed JSON to the chat sink, because that is how the driver learns it may sign (exactly as it
  does for SignBridge) and how row 5 times a card.

Run as a worker process: `python -m bench.baseline` (reads the same SIGNBRIDGE_* variables as
the real worker: address, task queue, outbound URL, secret).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    import httpx

    from connectors.chat.webhook import signature as webhook_signature

BASELINE_QUEUE_SUFFIX = "-baseline"


@dataclass
class FlowShape:
    request_id: str
    signers: list[str]  # one per group, signing in order (a signal each)
    before: int = 2  # activities before the first group (prepare, create_flow)
    per_group: int = 2  # no-op activities when a group opens (open_group, publish), then the link
    after: int = 3  # finish, send_file, publish
    card_after_signal: bool = False  # POST a card to the sink after each signal (row 5)


@dataclass
class Notify:
    request_id: str
    kind: str  # "link" or "card"
    to: str = ""
    seq: int = 0


@activity.defn(name="noop")
async def noop() -> None:
    return None


class Notifier:
    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.secret = secret
        self.http = httpx.AsyncClient(timeout=10)

    @activity.defn(name="notify")
    async def notify(self, n: Notify) -> None:
        body: dict[str, Any]
        if n.kind == "link":
            body = {"type": "message", "to": n.to, "text": "sign", "sign_url": f"baseline://{n.request_id}/{n.to}",
                    "idempotency_key": f"{n.request_id}:link:{n.to}"}
        else:
            body = {"type": "card.upsert", "chat_id": "g-1", "card_key": n.request_id, "card": {"seq": n.seq},
                    "idempotency_key": f"{n.request_id}:card:{n.seq}"}
        raw = json.dumps(body).encode()
        resp = await self.http.post(self.url, content=raw, headers={
            **webhook_signature.headers(self.secret, raw), "Content-Type": "application/json"})
        resp.raise_for_status()


@workflow.defn(name="BenchEmpty")
class BenchEmpty:
    @workflow.run
    async def run(self) -> None:
        return None


_OPTS = dict(start_to_close_timeout=timedelta(seconds=30))


@workflow.defn(name="BenchFlow")
class BenchFlow:
    def __init__(self) -> None:
        self.signals = 0

    @workflow.signal(name="signed")
    def signed(self, signer: str) -> None:
        self.signals += 1

    @workflow.run
    async def run(self, shape: FlowShape) -> int:
        for _ in range(shape.before):
            await workflow.execute_activity("noop", **_OPTS)  # type: ignore[call-overload]
        for i, signer in enumerate(shape.signers):
            for _ in range(shape.per_group):
                await workflow.execute_activity("noop", **_OPTS)  # type: ignore[call-overload]
            await workflow.execute_activity("notify", Notify(shape.request_id, "link", to=signer),
                                            **_OPTS)  # type: ignore[call-overload]
            await workflow.wait_condition(lambda i=i: self.signals > i)  # type: ignore[misc]
            if shape.card_after_signal:
                await workflow.execute_activity("notify", Notify(shape.request_id, "card", seq=i + 1),
                                                **_OPTS)  # type: ignore[call-overload]
        for _ in range(shape.after):
            await workflow.execute_activity("noop", **_OPTS)  # type: ignore[call-overload]
        return self.signals


def baseline_worker(client: Client, task_queue: str, sink_url: str, secret: str) -> Worker:
    notifier = Notifier(sink_url, secret)
    return Worker(client, task_queue=task_queue, workflows=[BenchEmpty, BenchFlow],
                  activities=[noop, notifier.notify])


async def _main() -> None:
    client = await Client.connect(os.environ["SIGNBRIDGE_TEMPORAL_ADDRESS"],
                                  data_converter=pydantic_data_converter)
    queue = os.environ["SIGNBRIDGE_TASK_QUEUE"] + BASELINE_QUEUE_SUFFIX
    worker = baseline_worker(client, queue, os.environ.get("SIGNBRIDGE_WEBHOOK_OUTBOUND_URL", ""),
                             os.environ["SIGNBRIDGE_WEBHOOK_SECRET"])
    await worker.run()


if __name__ == "__main__":
    asyncio.run(_main())
