"""Alembic migrations build exactly the schema the SQLModel tables describe, and unwind cleanly.

If this fails after a change to store/tables.py, generate a revision:
`SIGNBRIDGE_DATABASE_URL=sqlite:///.data/ag.db .venv/bin/alembic upgrade head &&
 SIGNBRIDGE_DATABASE_URL=sqlite:///.data/ag.db .venv/bin/alembic revision --autogenerate -m "..."`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel

from store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from store.repos import chat_files

ROOT = Path(__file__).resolve().parent.parent


def _config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def _sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def _check_round_trip(url: str) -> None:
    cfg = _config(url)
    command.upgrade(cfg, "head")
    engine = create_engine(_sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, SQLModel.metadata)
        assert diff == [], f"migrations and store/tables.py disagree: {diff}"

        command.downgrade(cfg, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

        command.upgrade(cfg, "head")  # and back up again from nothing
        assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_sqlite_upgrade_matches_metadata_and_downgrades(tmp_path: Path) -> None:
    _check_round_trip(f"sqlite:///{tmp_path / 'fresh.db'}")


def test_postgresql_upgrade_matches_metadata_and_downgrades(pg_url: str) -> None:
    _check_round_trip(pg_url)


def test_single_head() -> None:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"several alembic heads, merge them: {heads}"


def test_chat_files_move_out_of_the_inbox_and_back(tmp_path: Path) -> None:
    """The revision that gave chat files their table moves the inbox's file rows there — the
    intake finds them as before — and the downgrade moves them back."""
    url = f"sqlite:///{tmp_path / 'files.db'}"
    cfg = _config(url)
    command.upgrade(cfg, "7c3f9a1e2b64")
    engine = create_engine(url, poolclass=NullPool)
    old = [  # what the Feishu, DingTalk and WeCom handlers kept before
        ("feishu:file", "oc_1/ou_a/om_1", {"event_id": "ev-1", "message_id": "om_1", "file_key": "fk_1",
                                           "file_name": "合同.pdf"}),
        ("dingtalk:file", "cid/AB==/lisi/msg-1", {"downloadCode": "dc-1", "fileName": "采购.pdf"}),
        ("wecom", "file:zhangsan/zhangsan/9001", {"media_id": "m-1", "name": "a.pdf", "corp_id": "ww1"}),
        ("wecom", "9002", {"not": "a file"}),  # an inbox event of the listener: stays
    ]
    with engine.begin() as conn:
        for platform, key, payload in old:
            conn.execute(text("INSERT INTO inbound_events (platform, event_id, payload, status, received_at) "
                              "VALUES (:p, :k, :d, 'handled', CURRENT_TIMESTAMP)"),
                         {"p": platform, "k": key, "d": json.dumps(payload, ensure_ascii=False)})
    try:
        command.upgrade(cfg, "head")
        since = datetime.now(UTC) - timedelta(days=1)
        assert chat_files.in_message(engine, platform="feishu", tenant="tenant-1", chat_id="oc_1",
                                     message_id="om_1") == [chat_files.Posted("合同.pdf", "feishu://om_1/fk_1")]
        assert chat_files.latest(engine, platform="dingtalk", tenant="corp", chat_id="cid/AB==", sender_id="lisi",
                                 since=since) == [chat_files.Posted("采购.pdf", "dingtalk-file:dc-1")]
        assert chat_files.latest(engine, platform="wecom", tenant="ww1", chat_id="zhangsan", sender_id="zhangsan",
                                 since=since) == [chat_files.Posted("a.pdf", "wecom-media:m-1")]
        with engine.connect() as conn:
            left = conn.execute(text("SELECT platform, event_id FROM inbound_events")).all()
        assert [tuple(r) for r in left] == [("wecom", "9002")]

        command.downgrade(cfg, "7c3f9a1e2b64")
        with engine.connect() as conn:
            back = {(r[0], r[1]): json.loads(r[2]) for r in conn.execute(
                text("SELECT platform, event_id, payload FROM inbound_events"))}
        assert back[("dingtalk:file", "cid/AB==/lisi/msg-1")] == old[1][2]
        assert back[("wecom", "file:zhangsan/zhangsan/9001")] == old[2][2]
        assert back[("feishu:file", "oc_1/ou_a/om_1")]["file_key"] == "fk_1" and len(back) == 4
    finally:
        engine.dispose()
