"""Replays recorded workflow histories against today's `SigningWorkflow` and `BulkSendWorkflow`.

A change to the workflow that would break flows already running (a week-long wait for a
signature spans deploys) fails here; such changes go behind `workflow.patched`.
Record a new history with `signbridge`'s tests: see `record_history` in tests/test_workflow.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.bulk import BulkSendWorkflow
from workflows.signing import SigningWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_recorded() -> None:
    assert HISTORIES, "tests/histories/ holds no recorded history to replay"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[SigningWorkflow, BulkSendWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
