"""Stored documents (`Document` rows): content-addressed, one row per SHA-256."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session

from store.db import insert_once
from store.tables import Document


def name_of(engine: Engine, sha256: str) -> str | None:
    with Session(engine) as session:
        row = session.get(Document, sha256)
        return row.name if row is not None else None


def get(engine: Engine, sha256: str) -> Document | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Document, sha256)


def record(engine: Engine, document: Document) -> None:
    """Idempotent: the same bytes stored twice are one row (the first name wins)."""
    insert_once(engine, document)
