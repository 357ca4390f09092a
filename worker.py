"""The only place that wires a Temporal `Worker`: workflows, activities and their dependencies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from activities.chat import ChatActivities
from activities.deps import Deps
from activities.documents import DocumentActivities
from activities.provider import ProviderActivities
from connectors.chat.base import ChatConnector
from connectors.chat.registry import build_chats
from connectors.esign.base import ESignProvider
from connectors.esign.registry import build_providers
from signbridge.observability import configure_logging, worker_runtime
from signbridge.settings import Settings, get_settings
from signbridge.shutdown import GRACEFUL_SHUTDOWN_TIMEOUT, run_until_signalled
from signbridge.temporal import connect
from store.blob_factory import make_blob_store
from store.db import create_all, get_engine
from workflows.signing import SigningWorkflow


def activities_for(deps: Deps) -> list[Any]:
    docs, provider, chat = DocumentActivities(deps), ProviderActivities(deps), ChatActivities(deps)
    return [
        docs.prepare, docs.finish,
        provider.create_flow, provider.open_group, provider.poll, provider.revoke, provider.remind,
        chat.publish, chat.send_link, chat.send_text, chat.send_file,
    ]


@asynccontextmanager
async def build_worker(
    client: Client,
    settings: Settings,
    providers: dict[str, ESignProvider] | None = None,
    chats: dict[str, ChatConnector] | None = None,
    graceful_shutdown_timeout: timedelta = timedelta(),
) -> AsyncIterator[Worker]:
    """A worker with its dependencies; tests may swap in providers or chats (e.g. an outage)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    if settings.environment == "development":
        create_all(engine)  # elsewhere `signbridge db upgrade` (alembic) owns the schema
    blobs = make_blob_store(settings)
    async with httpx.AsyncClient(timeout=30) as http:
        deps = Deps(settings=settings, engine=engine, blobs=blobs, http=http,
                    chats=chats if chats is not None else build_chats(settings, http),
                    providers=providers if providers is not None else build_providers(settings, engine, blobs, http))
        yield Worker(client, task_queue=settings.task_queue, workflows=[SigningWorkflow],
                     activities=activities_for(deps), graceful_shutdown_timeout=graceful_shutdown_timeout)


async def run(settings: Settings) -> None:
    client = await connect(settings, runtime=worker_runtime(settings))
    async with build_worker(client, settings, graceful_shutdown_timeout=GRACEFUL_SHUTDOWN_TIMEOUT) as worker:
        logging.info("worker polling task queue %s on %s", settings.task_queue, settings.temporal_address)
        await run_until_signalled(worker)


def main() -> None:
    configure_logging()
    settings = get_settings()
    settings.check_production()
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
