"""A chat message that carries files but no command is acknowledged only once its files are kept.

Its files live nowhere else: the platform will not send the message again after a 2xx, so a crash
between the acknowledgement and a background write would lose them for the command that follows.
A command's own files travel with its flow, so its write may finish after the answer.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from temporalio.testing import WorkflowEnvironment

from connectors.chat.webhook.inbound import RULES
from signbridge.core.chat import ChatEvent, FileRef, Ignored
from signbridge.core.settings import Settings
from signbridge.intake import Intake
from store.db import create_all, get_engine
from store.repos import chat_files
from tests.harness import INITIATOR

FILE = FileRef(name="合同.pdf", url="https://im.example/files/f-1")


def _message(event_id: str, text: str) -> ChatEvent:
    return ChatEvent(platform="webhook", tenant="default", chat_id="g-1", sender=INITIATOR, event_id=event_id,
                     text=text, message_id=f"m-{event_id}", files=(FILE,))


def _slow_writes(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
    """The real write, after the disk took its time (or failed, as a locked database does)."""
    real = chat_files.remember

    def slow(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.3)
        if fail:
            raise OperationalError("INSERT INTO chat_files", {}, Exception("database is locked"))
        real(*args, **kwargs)

    monkeypatch.setattr(chat_files, "remember", slow)


async def test_files_without_a_command_are_kept_before_the_answer(
        dev_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    _slow_writes(monkeypatch)
    intake = Intake(dev_env.client, settings, engine)
    outcome = await intake.start_from_command(_message("e-1", "这是合同"), RULES)
    assert isinstance(outcome, Ignored)
    # No `settled()`: the answer itself waited for the write.
    assert chat_files.in_message(engine, platform="webhook", tenant="default", chat_id="g-1",
                                 message_id="m-e-1") == [chat_files.Posted(FILE.name, FILE.url)]


async def test_a_failed_write_is_not_acknowledged(
        dev_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    _slow_writes(monkeypatch, fail=True)
    intake = Intake(dev_env.client, settings, engine)
    with pytest.raises(OperationalError):  # the platform gets an error and delivers the message again
        await intake.start_from_command(_message("e-2", "这是合同"), RULES)
