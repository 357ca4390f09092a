"""Graceful worker shutdown for rolling deploys.

On SIGTERM (what `docker compose stop`, Kubernetes and systemd send) the worker stops polling
for new tasks and gives activities already running `GRACEFUL_SHUTDOWN_TIMEOUT` to finish, so a
deploy does not cut a provider call or a file download in half (the activity would be retried,
but a half-done call to an external API is exactly what idempotency keys exist to survive, not
something to provoke on every deploy). Workflows need nothing: their state is in Temporal's
history and the next worker carries on.

The orchestrator's kill timeout must be longer than this (compose: `stop_grace_period`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable
from datetime import timedelta
from typing import Protocol

log = logging.getLogger(__name__)

# Activities here are short (provider and chat API calls, a PDF check); 50 s covers a slow
# download with room to spare and stays below compose's `stop_grace_period: 60s`.
GRACEFUL_SHUTDOWN_TIMEOUT = timedelta(seconds=50)

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Runnable(Protocol):
    """A `Worker`, or `worker.Workers` (the main worker plus the provider-queue workers)."""

    async def run(self) -> None: ...

    async def shutdown(self) -> None: ...


async def run_until_signalled(worker: Runnable, signals: Iterable[signal.Signals] = SHUTDOWN_SIGNALS) -> None:
    """Run `worker` until one of `signals` arrives, then drain it; returns once it has stopped.

    The worker must have been built with `graceful_shutdown_timeout` (else in-flight activities
    are cancelled at once). If the worker stops on its own (a fatal error), its error is raised.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    sigs = list(signals)
    for sig in sigs:
        loop.add_signal_handler(sig, stop.set)
    try:
        running = asyncio.create_task(worker.run())
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if running in done:
            stopping.cancel()
            running.result()
            return
        log.info("shutdown signal: no new tasks; draining running activities")
        await worker.shutdown()
        await running
        log.info("worker drained and stopped")
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)
