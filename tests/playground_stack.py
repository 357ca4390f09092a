"""A development stack whose chat is the playground: the real API under uvicorn on a loopback
port (so the playground posts to it and the worker fetches from it over real HTTP), the real
worker, and the outbound URL pointing at the playground's receiver, as `signbridge run` sets it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from api.main import create_app
from signbridge.core.settings import Settings
from tests.conftest import make_settings
from tests.sim.servers import free_port, serve
from worker import build_worker


@dataclass
class PlaygroundStack:
    url: str
    settings: Settings
    http: httpx.AsyncClient  # to the API, as a browser or `signbridge demo` talks to it

    async def entries(self, after: int = 0) -> list[dict[str, Any]]:
        return (await self.http.get("/playground/api/entries", params={"after": after})).json()  # type: ignore[no-any-return]


@asynccontextmanager
async def playground_stack(client: Client, data_dir: Path, **overrides: Any) -> AsyncIterator[PlaygroundStack]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(data_dir, public_url=base, webhook_outbound_url=f"{base}/playground/outbound",
                             **overrides)
    async with build_worker(client, settings) as workers, workers:
        with serve(create_app(settings, client), port=port) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                yield PlaygroundStack(url, settings, http)
