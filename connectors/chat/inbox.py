"""The durable inbox between a long connection's acknowledgement and the workflow start.

A long-connection platform redelivers an event only while it is unacknowledged, so an event
acknowledged and then lost (Temporal down, process killed) would be lost for good. The inbox
closes that gap: `store` commits the event as an `InboundEvent` row before the listener acks,
`handle` runs the platform's handler and marks the row, and `drain` (at start-up and on a
timer) re-runs every row still `stored` — so an outage delays a command but never drops it.

Handlers are idempotent (a flow's workflow id comes from the event id), which makes a row
handled twice — crash between the handler and the mark — harmless.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from store.tables import InboundEvent, utcnow

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
DRAIN_EVERY = timedelta(seconds=30)


class PermanentFailure(Exception):
    """The event can never be handled (malformed, refers to nothing): mark it `failed`, don't retry."""


class Listener(Protocol):
    """One platform's long connection. `run` returns only when `stop` is set."""

    platform: str

    async def run(self, inbox: Inbox, stop: asyncio.Event) -> None: ...


class Inbox:
    def __init__(self, engine: Engine, handlers: dict[str, Handler]) -> None:
        self.engine = engine
        self.handlers = handlers  # platform -> handler of one stored payload

    def store(self, platform: str, event_id: str, payload: dict[str, Any]) -> bool:
        """Commit the event; False when this event id was stored before (a redelivery)."""
        with Session(self.engine) as session:
            session.add(InboundEvent(platform=platform, event_id=event_id,
                                     payload=json.dumps(payload, ensure_ascii=False)))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return False
        return True

    async def handle(self, platform: str, event_id: str) -> Any:
        """Run the handler for one stored event; a transient failure leaves it for `drain`."""
        return (await self._handle(platform, event_id))[1]

    async def drain(self, platforms: list[str] | None = None) -> int:
        """Handle every event still `stored`, oldest first; returns how many got handled."""
        with Session(self.engine) as session:
            query = select(InboundEvent).where(InboundEvent.status == "stored",
                                               col(InboundEvent.platform).in_(platforms or list(self.handlers)))
            keys = [(r.platform, r.event_id) for r in session.exec(query.order_by(col(InboundEvent.id)))]
        return sum([(await self._handle(platform, event_id))[0] for platform, event_id in keys])

    def status(self, platform: str, event_id: str) -> str | None:
        with Session(self.engine) as session:
            row = _row(session, platform, event_id)
            return row.status if row else None

    async def _handle(self, platform: str, event_id: str) -> tuple[bool, Any]:
        """(handled now, the handler's result)."""
        with Session(self.engine) as session:
            row = _row(session, platform, event_id)
            if row is None or row.status != "stored":
                return False, None
            payload = json.loads(row.payload)
        try:
            result = await self.handlers[platform](payload)
        except PermanentFailure as e:
            log.warning("%s event %s cannot be handled: %s", platform, event_id, e)
            self._mark(platform, event_id, "failed")
            return False, None
        except Exception:
            log.exception("%s event %s failed; kept for the next drain", platform, event_id)
            return False, None
        self._mark(platform, event_id, "handled")
        return True, result

    def _mark(self, platform: str, event_id: str, status: str) -> None:
        with Session(self.engine) as session:
            row = _row(session, platform, event_id)
            assert row is not None  # rows are never deleted
            row.status, row.handled_at = status, utcnow()
            session.add(row)
            session.commit()


def _row(session: Session, platform: str, event_id: str) -> InboundEvent | None:
    return session.exec(select(InboundEvent).where(InboundEvent.platform == platform,
                                                   InboundEvent.event_id == event_id)).first()


async def drain_forever(inbox: Inbox, stop: asyncio.Event, every: timedelta = DRAIN_EVERY) -> None:
    while not stop.is_set():
        await inbox.drain()
        try:
            await asyncio.wait_for(stop.wait(), every.total_seconds())
        except TimeoutError:
            pass
