"""The durable inbox between a long connection's ack and the handler (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from connectors.chat.inbox import Inbox, PermanentFailure
from store.db import create_all, get_engine
from store.tables import InboundEvent


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Any) -> Engine:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/inbox.db"
    else:
        url = request.getfixturevalue("pg_url")
    engine = get_engine(url)
    create_all(engine)
    return engine


class Flaky:
    """A handler that fails `failures` times (Temporal unreachable), then records the payload."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, payload: dict[str, Any]) -> str:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("temporal unreachable")
        if payload.get("bad"):
            raise PermanentFailure("no chat id")
        self.seen.append(payload)
        return "started"


async def test_store_dedupes_and_handle_marks(engine: Engine) -> None:
    handler = Flaky()
    inbox = Inbox(engine, {"feishu": handler})
    assert inbox.store("feishu", "ev-1", {"n": 1}) is True
    assert inbox.store("feishu", "ev-1", {"n": 1}) is False  # redelivered: no second row
    assert inbox.store("dingtalk", "ev-1", {"n": 2}) is True  # ids are per platform
    assert await inbox.handle("feishu", "ev-1") == "started"
    assert await inbox.handle("feishu", "ev-1") is None  # handled once only
    assert handler.seen == [{"n": 1}] and inbox.status("feishu", "ev-1") == "handled"


async def test_transient_failure_is_kept_and_drained_later(engine: Engine) -> None:
    handler = Flaky(failures=1)
    inbox = Inbox(engine, {"dingtalk": handler})
    inbox.store("dingtalk", "m-1", {"n": 1})
    inbox.store("dingtalk", "m-2", {"bad": True})
    assert await inbox.handle("dingtalk", "m-1") is None
    assert inbox.status("dingtalk", "m-1") == "stored"  # nothing lost: the next drain retries it
    assert await inbox.drain() == 1
    assert handler.seen == [{"n": 1}]
    assert inbox.status("dingtalk", "m-1") == "handled" and inbox.status("dingtalk", "m-2") == "failed"
    assert await inbox.drain() == 0
    with Session(engine) as session:
        rows = session.exec(select(InboundEvent).where(InboundEvent.platform == "dingtalk")).all()
    assert sorted(r.event_id for r in rows) == ["m-1", "m-2"]
