"""Alembic migrations build exactly the schema the SQLModel tables describe, and unwind cleanly.

If this fails after a change to store/tables.py, generate a revision:
`SIGNBRIDGE_DATABASE_URL=sqlite:///.data/ag.db .venv/bin/alembic upgrade head &&
 SIGNBRIDGE_DATABASE_URL=sqlite:///.data/ag.db .venv/bin/alembic revision --autogenerate -m "..."`.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel

from store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

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
