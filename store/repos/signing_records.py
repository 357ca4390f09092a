"""Signing requests as the database knows them (`SigningRequestRecord`): workflow ↔ provider flow ↔ chat.

The row is what routes a provider's webhook to its workflow and keeps a request findable after
Temporal's retention dropped its history. The workflow's activities write it; nothing else does.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store import audit
from store.db import insert_once
from store.tables import SigningRequestRecord, utcnow


def workflow_for_flow(engine: Engine, provider: str, flow_id: str) -> str | None:
    """The workflow id of the request whose flow at `provider` is `flow_id`; None if we made no such flow."""
    with Session(engine) as session:
        row = session.exec(select(SigningRequestRecord).where(SigningRequestRecord.provider == provider,
                                                              SigningRequestRecord.provider_flow_id == flow_id)).first()
    return row.request_id if row is not None else None


def create(engine: Engine, record: SigningRequestRecord) -> None:
    """Idempotent: a retried activity finds the row there already."""
    insert_once(engine, record)


def update(engine: Engine, request_id: str, **values: object) -> bool:
    """Set `values` on the row (and `updated_at` when something changed); False if there is no row."""
    with Session(engine) as session:
        row = session.get(SigningRequestRecord, request_id)
        if row is None:
            return False
        if any(getattr(row, k) != v for k, v in values.items()):
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            session.add(row)
            session.commit()
        return True


def set_certificate(engine: Engine, request_id: str, sha256: str) -> str | None:
    """Record the request's certificate unless one is recorded already; the one that stays."""
    with Session(engine) as session:
        row = session.get(SigningRequestRecord, request_id)
        if row is None:
            return None
        if row.certificate_sha256 is None:
            row.certificate_sha256 = sha256
            session.add(row)
            session.commit()
        return row.certificate_sha256


def publish(engine: Engine, request_id: str, status: str, events: list[dict[str, object]],
            snapshot: str | None = None) -> None:
    """The flow's audit events since its last publish, its status and view, in one session."""
    with Session(engine) as session:
        for event in events:
            audit.append(session, **event)  # type: ignore[arg-type]
        row = session.get(SigningRequestRecord, request_id)
        if row is not None and (row.status != status or (snapshot is not None and row.snapshot != snapshot)):
            row.status, row.updated_at = status, utcnow()
            row.snapshot = snapshot if snapshot is not None else row.snapshot
            session.add(row)
            session.commit()


def get(engine: Engine, request_id: str) -> SigningRequestRecord | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(SigningRequestRecord, request_id)


def listing(engine: Engine, *, status: str | None = None, words: str = "", initiator: str | None = None,
            limit: int = 100) -> list[SigningRequestRecord]:
    """Newest first, from the database: found whatever Temporal still remembers."""
    query = select(SigningRequestRecord)
    if status:
        query = query.where(SigningRequestRecord.status == status)
    if initiator:
        query = query.where(SigningRequestRecord.initiator_id == initiator)
    query = query.where(*title_has(words))
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(query.order_by(col(SigningRequestRecord.created_at).desc()).limit(limit)).all())


def title_has(words: str) -> list[Any]:
    """Conditions: the title contains every word (`%` and `_` in a word are literal)."""
    escaped = [w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for w in words.split()]
    return [col(SigningRequestRecord.title).like(f"%{w}%", escape="\\") for w in escaped]


def request_ids(engine: Engine) -> list[str]:
    """Every request the database knows, newest first (the CLI resolves short ids against them)."""
    with Session(engine) as session:
        return list(session.exec(select(SigningRequestRecord.request_id)
                                 .order_by(col(SigningRequestRecord.created_at).desc())))
