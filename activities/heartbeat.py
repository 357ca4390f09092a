"""Every (non-local) activity heartbeats while it runs, so a dead worker is noticed in seconds.

Without heartbeats Temporal learns that a worker died mid-activity only when the attempt's
start-to-close timeout (minutes) runs out, and only then retries it elsewhere. The workflow
gives its activities a short `heartbeat_timeout`; this interceptor beats at a third of it from a
side task for as long as the activity's coroutine runs (CPU-heavy work runs in threads, so the
event loop stays free to beat). An activity that reports progress itself may heartbeat too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor


class HeartbeatInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Heartbeating(next)


class _Heartbeating(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.is_local or not info.heartbeat_timeout:
            return await self.next.execute_activity(input)
        every = info.heartbeat_timeout.total_seconds() / 3

        async def beat() -> None:
            while True:
                await asyncio.sleep(every)
                activity.heartbeat()

        beating = asyncio.create_task(beat())
        try:
            return await self.next.execute_activity(input)
        finally:
            beating.cancel()
