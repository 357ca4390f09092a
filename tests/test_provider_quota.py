"""Provider API quotas: `build_worker` runs a worker per provider queue whose activity rate is
capped server-side by Temporal (`SIGNBRIDGE_<PROVIDER>_MAX_REQUESTS_PER_SECOND`).

Behavioural, on the real dev server: a tiny workflow (not SigningWorkflow) schedules six `poll`
activities at once on the provider's queue; the recording provider notes when each one starts.
Capped at 2/s they spread over about 2.5 s; uncapped they all start within a fraction of that.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from connectors.esign.docusign import DocuSignConfig
from signbridge.core.models import ProviderEvent, ProviderFlowRef
from signbridge.core.settings import Settings
from signbridge.core.temporal import PROVIDER_ACTIVITIES, provider_task_queue
from worker import Workers, build_worker, provider_rate_limit

ACTIVITIES = 6


class RecordingProvider:
    """Stands in for DocuSign: `poll` records when it started and returns nothing."""

    name = "docusign"
    incremental = False

    def __init__(self) -> None:
        self.started: list[float] = []

    async def poll(self, flow_id: str) -> list[ProviderEvent]:
        self.started.append(time.monotonic())
        return []

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(name)


@workflow.defn(sandboxed=False)
class FanOutWorkflow:
    @workflow.run
    async def run(self, queue: str) -> int:
        refs = [ProviderFlowRef(request_id=f"r{i}", provider="docusign", flow_id=f"f{i}") for i in range(ACTIVITIES)]
        await asyncio.gather(*(workflow.execute_activity("poll", ref, task_queue=queue, result_type=list[ProviderEvent],
                                                         start_to_close_timeout=timedelta(seconds=30))
                               for ref in refs))
        return len(refs)


async def _spread(env: WorkflowEnvironment, settings: Settings) -> float:
    """Seconds between the first and the last of the six activities starting."""
    provider = RecordingProvider()
    queue = provider_task_queue(settings.task_queue, "docusign")
    async with build_worker(env.client, settings, providers={"docusign": provider}) as workers, workers, \
            Worker(env.client, task_queue=f"{settings.task_queue}.test", workflows=[FanOutWorkflow]):
        assert set(workers.providers) == {"docusign"}
        done = await env.client.execute_workflow(FanOutWorkflow.run, queue, id=f"quota-{uuid.uuid4().hex[:8]}",
                                                 task_queue=f"{settings.task_queue}.test",
                                                 execution_timeout=timedelta(seconds=30))
    assert done == ACTIVITIES and len(provider.started) == ACTIVITIES
    return max(provider.started) - min(provider.started)


async def test_provider_queue_rate_is_capped(dev_env: WorkflowEnvironment, settings: Settings,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNBRIDGE_DOCUSIGN_MAX_REQUESTS_PER_SECOND", "2")
    capped = await _spread(dev_env, settings)
    monkeypatch.setenv("SIGNBRIDGE_DOCUSIGN_MAX_REQUESTS_PER_SECOND", "0")
    free = await _spread(dev_env, settings.model_copy(update={"task_queue": settings.task_queue + "-free"}))
    assert capped >= 1.9, f"six activities at 2/s started within {capped:.2f} s"
    assert free < 1.0 and free * 3 < capped, f"uncapped {free:.2f} s vs capped {capped:.2f} s"


def test_rate_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGNBRIDGE_DOCUSIGN_MAX_REQUESTS_PER_SECOND", raising=False)
    assert provider_rate_limit("docusign") == DocuSignConfig().max_requests_per_second == 0.4  # 3,000 calls/hour
    monkeypatch.setenv("SIGNBRIDGE_DOCUSIGN_MAX_REQUESTS_PER_SECOND", "0")
    assert provider_rate_limit("docusign") is None
    monkeypatch.setenv("SIGNBRIDGE_FADADA_MAX_REQUESTS_PER_SECOND", "5")
    assert provider_rate_limit("fadada") == 5.0
    assert provider_rate_limit("local") is None and provider_rate_limit("no-such") is None
    assert "poll" in PROVIDER_ACTIVITIES


async def test_workers_drain_together(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    """`async with` starts every worker; `run()` returns once `shutdown()` has drained them all."""
    async with build_worker(dev_env.client, settings, providers={"docusign": RecordingProvider()}) as workers:
        assert isinstance(workers, Workers) and len(workers.all) == 2
        assert workers.providers["docusign"].task_queue == provider_task_queue(settings.task_queue, "docusign")
        running = asyncio.create_task(workers.run())
        await asyncio.sleep(0.5)
        assert all(w.is_running for w in workers.all)
        await asyncio.wait_for(workers.shutdown(), 10)
        await asyncio.wait_for(running, 10)
        assert all(w.is_shutdown for w in workers.all)
