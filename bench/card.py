"""Row 5 — signal to card: provider event delivered → the updated card arrives at the chat sink.

One flow at a time (low load): two parallel signers on the built-in provider. The first signer's
signature is made with the provider's own code (`connectors.esign.local.sign`, real PAdES) and
then delivered exactly as the signing page and the provider webhooks deliver it
(`signbridge.intake.provider_events.deliver`: a signal). The clock starts when the delivery starts and stops
when the card showing that signature reaches the sink (wall clock; sink and driver share it).
Baseline: a signal to `BenchFlow` whose one activity after the signal POSTs a card to the sink.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client

from bench.common import TimedSink, ms, pct
from bench.flows import SIGNERS, start_baseline, start_flow, timing
from connectors.esign import local
from signbridge.core.settings import Settings
from signbridge.intake.provider_events import deliver
from store.blob_factory import make_blob_store
from store.db import get_engine


@dataclass
class CardResult:
    latencies: list[float]  # seconds
    baseline: list[float]

    def p(self, which: str, q: float) -> float:
        return ms(pct(self.latencies if which == "sb" else self.baseline, q))


def _signed_card_after(t0: float) -> Any:
    """The first card that arrived after `t0` and shows a signature (no one had signed before)."""
    def find(msgs: list[tuple[float, dict[str, Any]]]) -> float | None:
        for arrived, m in msgs:
            if arrived >= t0 and m.get("type") == "card.upsert" \
                    and any(s.get("state") == "signed" for s in m["card"].get("signers", [])):
                return arrived
        return None

    return find


async def run(client: Client, settings: Settings, sink: TimedSink, n: int, log: Any = print) -> CardResult:
    engine = get_engine(settings.sqlalchemy_url)
    blobs = make_blob_store(settings)
    a, b = SIGNERS[0], SIGNERS[1]
    lat: list[float] = []
    for _ in range(n):
        handle = await start_flow(client, settings, [[a, b]], "card", timing(poll_after=timedelta(days=30)))
        url = await sink.link(handle.id, a.id)
        await sink.link(handle.id, b.id)
        token = re.sub(r"^.*/sign/", "", url)
        result = await local.sign(settings, engine, blobs, token, typed_name=a.name, consent=True, ip="127.0.0.1",
                                  user_agent="bench")
        t0 = time.time()
        await deliver(client, engine, result.event)
        arrived = await sink.wait(handle.id, _signed_card_after(t0), timeout=30)
        lat.append(arrived - t0)
        await handle.terminate("bench: measured")
        sink.forget(handle.id)
    base: list[float] = []
    for _ in range(n):
        handle = await start_baseline(client, settings, 1, "cardbase", card_after_signal=True)
        await sink.link(handle.id, SIGNERS[0].id)
        # Let the link activity's completion settle (SignBridge's side spends ~150 ms signing here),
        # so the signal meets an idle workflow in both measurements.
        await asyncio.sleep(0.2)
        t0 = time.time()
        await handle.signal("signed", SIGNERS[0].id)

        def card(msgs: list[tuple[float, dict[str, Any]]], t0: float = t0) -> float | None:
            return next((t for t, m in msgs if t >= t0 and m.get("type") == "card.upsert"), None)

        base.append(await sink.wait(handle.id, card, timeout=30) - t0)
        await handle.result()
        sink.forget(handle.id)
    res = CardResult(lat, base)
    log(f"  card signbridge p50 {res.p('sb', 50):.1f} ms p99 {res.p('sb', 99):.1f} ms; "
        f"baseline p50 {res.p('base', 50):.1f} ms p99 {res.p('base', 99):.1f} ms")
    return res
