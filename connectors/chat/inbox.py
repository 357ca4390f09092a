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

from store.repos import inbound_events

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
        return inbound_events.store(self.engine, platform, event_id, json.dumps(payload, ensure_ascii=False))

    async def handle(self, platform: str, event_id: str) -> Any:
        """Run the handler for one stored event; a transient failure leaves it for `drain`."""
        return (await self._handle(platform, event_id))[1]

    async def drain(self, platforms: list[str] | None = None) -> int:
        """Handle every event still `stored`, oldest first; returns how many got handled."""
        keys = inbound_events.waiting(self.engine, platforms or list(self.handlers))
        return sum([(await self._handle(platform, event_id))[0] for platform, event_id in keys])

    def status(self, platform: str, event_id: str) -> str | None:
        row = inbound_events.get(self.engine, platform, event_id)
        return row.status if row else None

    async def _handle(self, platform: str, event_id: str) -> tuple[bool, Any]:
        """(handled now, the handler's result)."""
        row = inbound_events.get(self.engine, platform, event_id)
        if row is None or row.status != "stored":
            return False, None
        try:
            result = await self.handlers[platform](json.loads(row.payload))
        except PermanentFailure as e:
            log.warning("%s event %s cannot be handled: %s", platform, event_id, e)
            inbound_events.mark(self.engine, platform, event_id, "failed")
            return False, None
        except Exception:
            log.exception("%s event %s failed; kept for the next drain", platform, event_id)
            return False, None
        inbound_events.mark(self.engine, platform, event_id, "handled")
        return True, result


class InOrder:
    """Stored events handled after their ack, one chat's in arrival order (a file, then the command
    that uses it; asyncio.Lock is FIFO), different chats side by side."""

    def __init__(self, inbox: Inbox, platform: str) -> None:
        self.inbox = inbox
        self.platform = platform
        self._tasks: set[asyncio.Task[Any]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._queued: dict[str, int] = {}

    def spawn(self, chat: str, key: str) -> None:
        task = asyncio.create_task(self._handle(chat, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, grace: float) -> None:
        """On stop: what is being handled may finish within `grace`; the rest stays stored for the drain."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()

    async def _handle(self, chat: str, key: str) -> None:
        self._queued[chat] = self._queued.get(chat, 0) + 1
        lock = self._locks.setdefault(chat, asyncio.Lock())
        try:
            async with lock:
                await self.inbox.handle(self.platform, key)
        finally:
            self._queued[chat] -= 1
            if not self._queued[chat]:
                del self._queued[chat], self._locks[chat]


async def drain_forever(inbox: Inbox, stop: asyncio.Event, every: timedelta = DRAIN_EVERY) -> None:
    while not stop.is_set():
        await inbox.drain()
        try:
            await asyncio.wait_for(stop.wait(), every.total_seconds())
        except TimeoutError:
            pass
