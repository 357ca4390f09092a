"""The real worker with a smaller sticky cache: `python -m bench.capped_worker <max_cached_workflows>`.

Row 4's cache measurement: the same `build_worker` wiring (activities, dependencies, workflows,
provider queues), only `SIGNBRIDGE_WORKER_MAX_CACHED_WORKFLOWS` differs, so waiting flows beyond
the cap are evicted and replayed from history when their next event arrives.
"""

from __future__ import annotations

import asyncio
import sys

from signbridge.core.settings import get_settings
from signbridge.core.temporal import connect
from worker import build_worker


async def _main(cap: int) -> None:
    settings = get_settings().model_copy(update={"worker_max_cached_workflows": cap})
    client = await connect(settings)
    async with build_worker(client, settings) as workers:
        await workers.run()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
