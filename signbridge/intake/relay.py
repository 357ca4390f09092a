"""The built-in provider's outbox relay: every stored event reaches its workflow, late at worst.

The signing page delivers each event (`LocalEvent`) at once and marks it delivered. A delivery
that fails — Temporal out of reach for the API process, a signal refused, the API process killed
between storing the event and signalling — leaves the row undelivered, and this loop, run by every
worker process, signals it again: rows older than `after` seconds (a live delivery may still be on
its way), oldest first, each claimed by one relay per attempt (several workers share the table),
retried with back-off (`after`, doubling, at most `RETRY_CAP` apart) until it arrives. A flow that
has ended, or that SignBridge never made, has nothing left to hear: the row is marked done with
a log line. Because of this, built-in flows never poll on a timer (`workflows/signing.py`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from temporalio.client import Client

from connectors.esign.local import stored_event
from signbridge.intake.provider_events import FlowEnded, UnknownFlow, deliver
from store.repos import local_flows
from store.tables import utcnow

log = logging.getLogger(__name__)

RETRY_CAP = timedelta(minutes=5)
DELIVERY_TIMEOUT_SECONDS = 10.0  # one signal; Temporal's client retries an unreachable frontend for ~10 s
BATCH = 100


class DeliveryRelay:
    """`run()` until cancelled; `relay_once()` is one pass (what the tests call)."""

    def __init__(self, client: Client, engine: Engine, after: float) -> None:
        self.client = client
        self.engine = engine
        self.after = timedelta(seconds=max(after, 0.1))

    def _retry_in(self, attempts: int) -> timedelta:
        return min(self.after * 2 ** min(attempts, 16), RETRY_CAP)

    async def relay_once(self, now: datetime | None = None) -> int:
        """Signal every due undelivered event once; returns how many reached their workflow or were
        settled (ended or unknown flow)."""
        now = now or utcnow()
        rows = await asyncio.to_thread(local_flows.undelivered, self.engine, now, now - self.after, BATCH)
        settled = 0
        for row in rows:
            if not await asyncio.to_thread(local_flows.claim_delivery, self.engine, row,
                                           now + self._retry_in(row.delivery_attempts)):
                continue  # another worker's relay has it
            try:
                async with asyncio.timeout(DELIVERY_TIMEOUT_SECONDS):
                    workflow_id = await deliver(self.client, self.engine, stored_event(row))
            except (FlowEnded, UnknownFlow) as e:
                log.info("relay: %s has nowhere to go (%s); marked done", row.event_id, e)
            except Exception as e:  # Temporal out of reach, a refused signal: try again later
                log.warning("relay: %s not delivered (attempt %d, next in %s): %s", row.event_id,
                            row.delivery_attempts + 1, self._retry_in(row.delivery_attempts), type(e).__name__)
                continue
            else:
                log.info("relay: delivered %s to %s", row.event_id, workflow_id)
            await asyncio.to_thread(local_flows.mark_delivered, self.engine, row.event_id, utcnow())
            settled += 1
        return settled

    async def run(self) -> None:
        """Look every `after` seconds; a failing database only delays the next look."""
        while True:
            try:
                await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay pass failed; trying again in %s", self.after)
            await asyncio.sleep(self.after.total_seconds())
