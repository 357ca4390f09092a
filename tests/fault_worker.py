"""The real worker as a child process, whose provider calls a test can slow down from outside.

`python -m tests.fault_worker` runs what `signbridge worker` runs, with every provider wrapped
in `OutageProvider`: a call to method M first sleeps the seconds stored under M in the JSON file
`SIGNBRIDGE_TEST_DELAYS` (re-read on every call). A test makes a step slow, kills the process
(SIGKILL) while the step is running there, and starts another one.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx

from connectors.esign.registry import build_providers
from signbridge.core.observability import configure_logging
from signbridge.core.settings import Settings
from signbridge.core.shutdown import run_until_signalled
from signbridge.core.temporal import connect
from store.blob_factory import make_blob_store
from store.db import create_all, get_engine
from tests.harness import OutageProvider
from worker import build_worker


def delays(path: Path) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return {}


async def main() -> None:
    configure_logging()
    settings = Settings()
    control = Path(os.environ["SIGNBRIDGE_TEST_DELAYS"])
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    async with httpx.AsyncClient(timeout=30) as http:
        providers = {name: OutageProvider(p, delay=lambda method: delays(control).get(method, 0.0))
                     for name, p in build_providers(settings, engine, make_blob_store(settings), http).items()}
        client = await connect(settings)
        async with build_worker(client, settings, providers=providers) as workers:  # type: ignore[arg-type]
            await run_until_signalled(workers)


if __name__ == "__main__":
    asyncio.run(main())
