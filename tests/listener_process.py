"""`signbridge chat-listener` as a child process, for the listener tests of every platform."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


@asynccontextmanager
async def listener_process(platform: str, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """The listener with piped output; killed on the way out if the test left it running."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "signbridge"), "chat-listener", "--platform", platform, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
