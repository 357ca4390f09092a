"""Engine and sessions. SQLite by default (under the data dir), PostgreSQL in production."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, create_engine

from store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from store.files import private_file

SYNCHRONOUS_VARIABLE = "SIGNBRIDGE_SQLITE_SYNCHRONOUS"  # `Settings.sqlite_synchronous`


def sqlite_synchronous() -> str:
    """SQLite's `synchronous` for new connections: the setting, else NORMAL for a development
    stack and FULL otherwise.

    In WAL mode NORMAL writes each commit to the WAL without an fsync (the WAL is synced at
    checkpoints): a commit costs microseconds instead of a disk flush, and every activity and
    signing page commits a few times, on the event loop. The file cannot be corrupted either way;
    what NORMAL gives up is the last commits before a power cut or an OS crash (a process crash
    loses nothing) — a signed version or an audit row a signer was told about. So a production
SQLite keeps FULL unless an operator chooses otherwise; a development stack (`make run`, the
bench) takes NORMAL. Read from the environment, where `load_env_file` puts `.env`, because engines
    are made from a URL alone; `Settings` validates the same variable at start."""
    development = os.environ.get("SIGNBRIDGE_ENVIRONMENT", "production").strip() == "development"
    value = os.environ.get(SYNCHRONOUS_VARIABLE, "").strip().upper() or ("NORMAL" if development else "FULL")
    if value not in ("NORMAL", "FULL"):
        raise ValueError(f"{SYNCHRONOUS_VARIABLE} must be NORMAL or FULL, not {value!r}")
    return value


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        synchronous = sqlite_synchronous()
        if database := make_url(url).database:
            private_file(Path(database))  # SQLite's -wal and -shm files take the database's mode
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def create_all(engine: Engine) -> None:
    """Create missing tables and add missing columns (development and tests; production runs
    alembic migrations). Columns too: a development database made by an older build would
    otherwise lack them, and match no migration revision for `signbridge db upgrade` either."""
    SQLModel.metadata.create_all(engine)
    with engine.begin() as conn:
        context = MigrationContext.configure(conn)
        operations = Operations(context)
        for diff in compare_metadata(context, SQLModel.metadata):
            if diff[0] == "add_column":  # ("add_column", schema, table, column)
                _, schema, table, column = diff
                default = column.server_default.arg if column.server_default is not None else None  # type: ignore[attr-defined]
                operations.add_column(table, Column(column.name, column.type, nullable=column.nullable,
                                                    server_default=default), schema=schema)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


def committed(session: Session) -> bool:
    """Commit; False (rolled back) when a unique constraint says the row exists already — a retry,
    a redelivery, or a concurrent attempt that got there first."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


def insert_once(engine: Engine, row: SQLModel) -> bool:
    """Insert `row` unless a row with its unique key exists; True when this call inserted it."""
    with Session(engine) as session:
        session.add(row)
        return committed(session)
