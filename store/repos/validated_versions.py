"""Validated signed versions (`ValidatedVersion` rows): what `finish` need not validate again."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.db import insert_once
from store.tables import ValidatedVersion


def find(engine: Engine, sha256s: Iterable[str]) -> list[ValidatedVersion]:
    """The recorded versions among `sha256s` (any order)."""
    wanted = sorted(set(sha256s))
    if not wanted:
        return []
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(select(ValidatedVersion).where(col(ValidatedVersion.sha256).in_(wanted))))


def record(engine: Engine, row: ValidatedVersion) -> None:
    """Idempotent: the same bytes validated twice are one row."""
    insert_once(engine, row)
