"""The only place that wires a Temporal `Worker`: workflows, activities and their dependencies.

Besides the main task queue (workflows and every activity), each configured provider gets a
worker on its own queue, `provider_task_queue(task_queue, provider)`, where the workflow
schedules the activities that call that provider's API (`PROVIDER_ACTIVITIES`). Those workers
pass `max_task_queue_activities_per_second` from `SIGNBRIDGE_<PROVIDER>_MAX_REQUESTS_PER_SECOND`:
Temporal enforces that rate for the queue across every worker process, so the fleet as a whole
stays inside the provider's API quota (0 or unset = no cap). The main queue keeps every activity
because flows started before the per-provider queues still schedule provider activities there.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from types import TracebackType
from typing import Any

import httpx
from pydantic_settings import BaseSettings
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker, WorkerConfig

from activities.approvals import ApprovalActivities
from activities.bulk import BulkActivities
from activities.certificates import CertificateActivities
from activities.chat import ChatActivities
from activities.deps import Deps
from activities.documents import DocumentActivities
from activities.heartbeat import HeartbeatInterceptor
from activities.provider import ProviderActivities
from connectors.chat.base import ChatConnector
from connectors.chat.registry import build_chats
from connectors.esign.base import ESignProvider
from connectors.esign.registry import PROVIDER_MODULES, build_providers
from connectors.notify.registry import Notifier
from signbridge.core import code_cache
from signbridge.core.observability import ObservabilitySettings, configure_logging, worker_runtime
from signbridge.core.settings import Settings, get_settings, load_env_file
from signbridge.core.shutdown import GRACEFUL_SHUTDOWN_TIMEOUT, run_until_signalled
from signbridge.core.temporal import connect, provider_task_queue
from signbridge.intake.relay import DeliveryRelay
from signbridge.pdf.pool import shutdown_pool
from store.blob_factory import make_blob_store
from store.db import create_all, get_engine
from store.files import private_dir
from workflows.bulk import BulkSendWorkflow
from workflows.reply import ChatReplyWorkflow
from workflows.signing import SigningWorkflow


def activities_for(deps: Deps) -> list[Any]:
    docs, provider, chat = DocumentActivities(deps), ProviderActivities(deps), ChatActivities(deps)
    approvals = ApprovalActivities(deps)
    bulk = BulkActivities(deps)
    return [
        approvals.read_approval, approvals.approval_result,
        docs.prepare, docs.finish, CertificateActivities(deps).certify,
        provider.create_flow, provider.open_group, provider.poll, provider.poll_flow, provider.revoke,
        provider.remind, provider.replace_signer,
        chat.publish, chat.send_link, chat.send_text, chat.send_file, chat.chat_reply,
        bulk.bulk_load, bulk.bulk_rows, bulk.bulk_publish,
    ]


RATE_FIELD = "max_requests_per_second"
# What the workflow sandbox imports afresh per workflow run (`signbridge.core.code_cache`).
WORKFLOW_PACKAGES = ("workflows",)


def provider_rate_limit(provider: str) -> float | None:
    """Activities per second allowed on `provider`'s queue, from its connector's settings class
    (`SIGNBRIDGE_<PROVIDER>_MAX_REQUESTS_PER_SECOND`); None = no cap (0, unset, or a provider
    without such a setting, like the built-in one, which calls no external API)."""
    module_name = f"connectors.esign.{provider}"
    if module_name not in PROVIDER_MODULES:
        return None
    module = importlib.import_module(module_name)
    for value in vars(module).values():
        if (isinstance(value, type) and issubclass(value, BaseSettings) and value.__module__ == module_name
                and RATE_FIELD in value.model_fields):
            rate = float(getattr(value(), RATE_FIELD))
            return rate if rate > 0 else None
    return None


class Workers:
    """The main worker and one per provider queue, run and drained as one.

    Behaves like a `Worker` where callers need it to: `async with` starts them all and on exit
    drains them all (concurrently, each within its graceful shutdown timeout); `run()` runs them
    until `shutdown()` or until one fails (then the others are drained and the error raised).
    """

    def __init__(self, main: Worker, providers: dict[str, Worker]) -> None:
        self.main = main
        self.providers = providers
        self._stack: AsyncExitStack | None = None

    @property
    def all(self) -> list[Worker]:
        return [self.main, *self.providers.values()]

    def config(self, *, active_config: bool = False) -> WorkerConfig:
        """The main worker's config (what `bench/capped_worker.py` rebuilds)."""
        return self.main.config(active_config=active_config)

    async def run(self) -> None:
        tasks = [asyncio.create_task(worker.run()) for worker in self.all]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            await self.shutdown()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        failed = next((t.exception() for t in done if t.exception() is not None), None)
        if failed is not None:
            await self.shutdown()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise failed
        await asyncio.gather(*tasks)

    async def shutdown(self) -> None:
        """Stop polling on every queue and wait until running activities finish (or time out)."""
        await asyncio.gather(*(worker.shutdown() for worker in self.all))

    async def __aenter__(self) -> Workers:
        async with AsyncExitStack() as stack:
            for worker in self.all:
                await stack.enter_async_context(worker)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            raise RuntimeError("never started")
        await self.shutdown()  # all at once, so one slow activity does not hold up the others' drain
        await stack.__aexit__(exc_type, exc, tb)


@asynccontextmanager
async def build_worker(
    client: Client,
    settings: Settings,
    providers: dict[str, ESignProvider] | None = None,
    chats: dict[str, ChatConnector] | None = None,
    graceful_shutdown_timeout: timedelta = timedelta(),
    notify: Notifier | None = None,
) -> AsyncIterator[Workers]:
    """The workers with their dependencies; tests may swap in providers, chats (e.g. an outage) or
    the email/SMS senders."""
    # The sandbox imports a workflow's module for every run it starts: compile it once per process.
    code_cache.install(WORKFLOW_PACKAGES)
    private_dir(settings.data_dir)
    engine = get_engine(settings.sqlalchemy_url)
    if settings.environment == "development":
        create_all(engine)  # elsewhere `signbridge db upgrade` (alembic) owns the schema
    blobs = make_blob_store(settings)
    async with httpx.AsyncClient(timeout=30) as http:
        deps = Deps(settings=settings, engine=engine, blobs=blobs, http=http,
                    chats=chats if chats is not None else build_chats(settings, http),
                    providers=providers if providers is not None else build_providers(settings, engine, blobs, http),
                    notify=notify)
        main = Worker(client, task_queue=settings.task_queue,
                      workflows=[SigningWorkflow, ChatReplyWorkflow, BulkSendWorkflow],
                      activities=activities_for(deps), graceful_shutdown_timeout=graceful_shutdown_timeout,
                      max_cached_workflows=settings.worker_max_cached_workflows,
                      interceptors=[HeartbeatInterceptor()])
        per_provider = {
            name: Worker(client, task_queue=provider_task_queue(settings.task_queue, name),
                         activities=activities_for(deps), graceful_shutdown_timeout=graceful_shutdown_timeout,
                         max_task_queue_activities_per_second=provider_rate_limit(name),
                         interceptors=[HeartbeatInterceptor()])
            for name in deps.providers
        }
        try:
            async with _relaying(client, engine, settings, "local" in deps.providers):
                yield Workers(main, per_provider)
        finally:
            await shutdown_pool()  # the signing processes (finish, prepare, certificates), if started


@asynccontextmanager
async def _relaying(client: Client, engine: Any, settings: Settings, local: bool) -> AsyncIterator[None]:
    """The built-in provider's outbox relay runs beside the workers (`signbridge/intake/relay.py`):
    what the signing page could not deliver reaches its workflow from here, so built-in flows
    never poll on a timer."""
    if not local:
        yield
        return
    task = asyncio.create_task(DeliveryRelay(client, engine, settings.delivery_relay_seconds).run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def run(settings: Settings, runtime: Runtime | None = None) -> None:
    client = await connect(settings, runtime=runtime or worker_runtime(settings))
    async with build_worker(client, settings, graceful_shutdown_timeout=GRACEFUL_SHUTDOWN_TIMEOUT) as workers:
        for name, worker in workers.providers.items():
            rate = worker.config().get("max_task_queue_activities_per_second")
            logging.info("provider %s: task queue %s, %s", name, provider_task_queue(settings.task_queue, name),
                         f"at most {rate} activities/s" if rate else "no rate cap")
        logging.info("worker polling task queue %s on %s", settings.task_queue, settings.temporal_address)
        await run_until_signalled(workers)


def main() -> None:
    load_env_file()  # as every `signbridge` command does; `signbridge run` starts us as `python -m worker`
    configure_logging()
    settings = get_settings()
    settings.check_production()
    asyncio.run(run(settings, metrics_runtime(settings)))


def metrics_runtime(settings: Settings) -> Runtime:
    """The runtime serving the worker's metrics; a taken address is one line naming the setting
    (a `SystemExit`), not a traceback from the Rust core."""
    try:
        return worker_runtime(settings)
    except ValueError as e:
        address = ObservabilitySettings().worker_metrics_address
        raise SystemExit(f"signbridge: the worker cannot serve metrics on {address} ({e}); set "
                         "SIGNBRIDGE_WORKER_METRICS_ADDRESS to a free host:port, or to empty for no metrics") from None


if __name__ == "__main__":
    main()
