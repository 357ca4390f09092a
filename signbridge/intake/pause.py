"""The pause switch as the API sees it: the database row, re-read at most every few seconds.

`signbridge pause --reason …` writes the row; every API process (and every chat listener) sees
it within `SIGNBRIDGE_PAUSE_CHECK_SECONDS`, without a restart or a message between processes.
Only new requests are turned away: flows already running carry on, and `/readyz` stays green.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.engine import Engine

from store.repos import switches


class PauseSwitch:
    def __init__(self, engine: Engine, ttl_seconds: float) -> None:
        self.engine = engine
        self.ttl = ttl_seconds
        self._reason: str | None = None
        self._read_at = float("-inf")
        self._rereading: asyncio.Future[str | None] | None = None

    def reason(self) -> str | None:
        """The reason while paused; None while new requests may start."""
        now = time.monotonic()
        if now - self._read_at >= self.ttl:
            row = switches.get(self.engine, switches.PAUSE)
            self._reason = (row.reason or "—") if row is not None and row.on else None
            self._read_at = now
        return self._reason

    async def current(self) -> str | None:
        """`reason()` for the event loop: the re-read, when due, runs in a thread, so a database busy
        with a checkpoint delays the callbacks that asked, not every one in flight; callbacks that
        ask meanwhile share that one re-read."""
        if time.monotonic() - self._read_at >= self.ttl:
            if self._rereading is None or self._rereading.done():
                self._rereading = asyncio.ensure_future(asyncio.to_thread(self.reason))
            await asyncio.shield(self._rereading)
        return self._reason
