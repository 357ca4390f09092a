"""The real worker with a capped sticky cache: `python -m bench.capped_worker <max_cached_workflows>`.

Row 4's suggested fix, measured: the same `build_worker` wiring (activities, dependencies,
workflows), only `max_cached_workflows` differs, so waiting flows beyond the cap are evicted
and replayed from history when their next event arrives.
"""

from __future__ import annotations

import asyncio
import sys

from temporalio.worker import Worker

from signbridge.settings import get_settings
from signbridge.temporal import connect
from worker import build_worker


async def _main(cap: int) -> None:
    settings = get_settings()
    client = await connect(settings)
    async with build_worker(client, settings) as built:
        config = built.config()
        config["max_cached_workflows"] = cap
        config["client"] = await connect(settings)  # one worker per queue per client: a fresh client
        await Worker(**config).run()  # type: ignore[misc]


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
