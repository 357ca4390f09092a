"""Safe deploys: the replay test really catches a breaking workflow change, and a worker told to
stop lets the activity it is running finish.

A signing flow waits days for signatures, so every deploy meets flows started by the previous
release. The guard: `tests/test_replay.py` replays recorded histories against today's code. This
file proves that guard has teeth — a copy of `SigningWorkflow` with one activity inserted before
`prepare` (the kind of change that must go behind `workflow.patched`) fails the replay with a
non-determinism error, while the real workflow replays cleanly over the same history.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

from signbridge.core.models import SigningRequest, StatusView
from signbridge.core.shutdown import GRACEFUL_SHUTDOWN_TIMEOUT, run_until_signalled
from workflows.signing import SigningWorkflow

HISTORY = Path(__file__).parent / "histories" / "serial-two-signers.json"


@workflow.defn(name="SigningWorkflow", sandboxed=False)
class SigningWorkflowWithExtraStep(SigningWorkflow):
    """Today's workflow plus one new activity right before `prepare`, *without* `workflow.patched`."""

    @workflow.run
    async def run(self, req: SigningRequest) -> StatusView:
        return await super().run(req)

    async def _act(self, name: str, arg: Any, result_type: Any, attempts: int = 0) -> Any:
        if name == "prepare":
            await workflow.execute_activity("scan_for_viruses", self.req.request_id,
                                            start_to_close_timeout=timedelta(minutes=1))
        return await super()._act(name, arg, result_type, attempts)


def _history() -> WorkflowHistory:
    return WorkflowHistory.from_json("serial-two-signers", HISTORY.read_text())


async def test_the_real_workflow_replays_cleanly() -> None:
    replayer = Replayer(workflows=[SigningWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(_history())
    assert result.replay_failure is None


async def test_an_unpatched_change_fails_the_replay() -> None:
    replayer = Replayer(workflows=[SigningWorkflowWithExtraStep], data_converter=pydantic_data_converter)
    with pytest.raises(workflow.NondeterminismError) as failure:
        await replayer.replay_workflow(_history())
    # The mismatch is the inserted activity meeting the recorded `prepare`.
    assert "scan_for_viruses" in str(failure.value) or "prepare" in str(failure.value)
    # Reported, not raised, when asked: the same failure, so CI can list every broken history.
    result = await replayer.replay_workflow(_history(), raise_on_replay_failure=False)
    assert isinstance(result.replay_failure, workflow.NondeterminismError)


# ---- graceful shutdown --------------------------------------------------------------------


class SlowStep:
    """An activity that runs until the test lets it finish, recording whether it was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancel_seen = False

    @activity.defn(name="drain_slow_step")
    async def run(self, name: str) -> str:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancel_seen = True
            raise
        return f"done {name}"


class ObservedWorker(Worker):
    """A real worker that lets the test see the moment `shutdown()` is called."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shutdown_called = asyncio.Event()

    async def shutdown(self) -> None:
        self.shutdown_called.set()
        await super().shutdown()


@workflow.defn(name="DrainWorkflow", sandboxed=False)
class DrainWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity("drain_slow_step", name, result_type=str,
                                               start_to_close_timeout=timedelta(minutes=2),
                                               heartbeat_timeout=None)


async def test_sigterm_drains_the_running_activity(dev_env: WorkflowEnvironment) -> None:
    client = dev_env.client
    task_queue = f"drain-{uuid.uuid4().hex[:8]}"
    step = SlowStep()
    worker = ObservedWorker(client, task_queue=task_queue, workflows=[DrainWorkflow], activities=[step.run],
                    workflow_runner=UnsandboxedWorkflowRunner(), graceful_shutdown_timeout=GRACEFUL_SHUTDOWN_TIMEOUT)
    running = asyncio.create_task(run_until_signalled(worker, [signal.SIGTERM]))
    handle = await client.start_workflow(DrainWorkflow.run, "contract", id=f"drain:{uuid.uuid4().hex[:8]}",
                                         task_queue=task_queue)
    await asyncio.wait_for(step.started.wait(), 20)

    os.kill(os.getpid(), signal.SIGTERM)  # what `docker compose stop` sends
    await asyncio.wait_for(worker.shutdown_called.wait(), 20)  # the handler asked the worker to stop
    # A negative check needs a window: without a graceful timeout the core cancels the activity
    # within milliseconds of the shutdown; with one it leaves it alone for 50 s. Half a second
    # tells the two apart and cannot make a correct worker fail.
    await asyncio.sleep(0.5)
    assert not step.cancel_seen and not running.done()  # draining: still waiting for the activity

    step.release.set()
    await asyncio.wait_for(running, 20)
    assert not step.cancel_seen
    # The activity's result reached Temporal: nothing to redo after the deploy.
    completed = [e async for e in handle.fetch_history_events()
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED]
    assert len(completed) == 1

    # The next release's worker picks the flow up where it stopped.
    async with Worker(client, task_queue=task_queue, workflows=[DrainWorkflow], activities=[SlowStep().run],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        assert await asyncio.wait_for(handle.result(), 20) == "done contract"

