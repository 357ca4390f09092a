"""Run an ASGI app on a real loopback port in a background thread (real HTTP in tests)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 until the block ends; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class LateAnswers:
    """ASGI middleware: a platform that acts on a request at once but answers it late.

    Requests whose path starts with one of `paths` are counted in `arrivals`. While `hold(seconds)`
    is on, such a request is handled by the wrapped app as usual (its effect happens) and only its
    answer waits `seconds`: the client's timeout fires after the platform acted, as when a chat is
    slow or an answer is lost on the way back. `release()` answers at once again.
    """

    def __init__(self, app: Any, *paths: str) -> None:
        self.app = app
        self.paths = paths
        self.seconds = 0.0
        self.arrivals = 0

    def hold(self, seconds: float) -> None:
        self.seconds = seconds

    def release(self) -> None:
        self.seconds = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(self.paths):
            await self.app(scope, receive, send)
            return
        self.arrivals += 1
        seconds = self.seconds
        answer: list[Any] = []

        async def keep(message: Any) -> None:
            answer.append(message)

        await self.app(scope, receive, keep)
        await asyncio.sleep(seconds)
        for message in answer:
            await send(message)
