"""The tamper-evident audit trail: per request, each row's hash covers the previous row's hash.

Changing, deleting or reordering any row breaks every hash after it (`verify_chain`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from store.tables import AuditEvent, utcnow

GENESIS = "0" * 64


def _canonical(detail: dict[str, Any]) -> str:
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def _row_hash(row: AuditEvent) -> str:
    created = row.created_at.astimezone(UTC).replace(microsecond=0).isoformat()
    material = "\n".join(
        [
            row.prev_hash,
            row.request_id,
            str(row.seq),
            row.key,
            row.action,
            row.actor,
            row.detail,
            row.ip or "",
            row.user_agent or "",
            row.document_sha256 or "",
            created,
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()


def append(
    session: Session,
    *,
    request_id: str,
    key: str,
    action: str,
    actor: str,
    detail: dict[str, Any] | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    document_sha256: str | None = None,
) -> AuditEvent:
    """Append one event; the same (request_id, key) is stored once, so retries are harmless.

    Optimistic: read the chain's head (its seq and hash only), insert, commit. The unique
    constraints decide the races: a key already recorded (a retried activity) or a seq taken by
    a concurrent append fails the insert, and only then is the existing row looked up, or the
    head read again. Two statements per new event instead of three full-row reads and an insert;
    the audit trail is most of the worker's queries."""
    for _ in range(5):
        last = session.exec(
            select(AuditEvent.seq, AuditEvent.hash).where(AuditEvent.request_id == request_id)
            .order_by(col(AuditEvent.seq).desc()).limit(1)
        ).first()
        row = AuditEvent(
            request_id=request_id,
            seq=(last[0] + 1) if last else 1,
            key=key,
            action=action,
            actor=actor,
            detail=_canonical(detail or {}),
            ip=ip,
            user_agent=user_agent,
            document_sha256=document_sha256,
            created_at=utcnow().replace(microsecond=0),
            prev_hash=last[1] if last else GENESIS,
            hash="",
        )
        row.hash = _row_hash(row)
        session.add(row)
        try:
            session.commit()
            return row
        except IntegrityError:
            # Recorded already (a retry), or someone else appended first: chain after them.
            session.rollback()
            existing = session.exec(
                select(AuditEvent).where(AuditEvent.request_id == request_id, AuditEvent.key == key)
            ).first()
            if existing:
                return existing
    raise RuntimeError(f"could not append audit event {key} for {request_id}")


def trail(session: Session, request_id: str) -> list[AuditEvent]:
    return list(
        session.exec(select(AuditEvent).where(AuditEvent.request_id == request_id).order_by(col(AuditEvent.seq)))
    )


def verify_chain(rows: list[AuditEvent]) -> bool:
    prev = GENESIS
    for i, row in enumerate(rows, start=1):
        if row.seq != i or row.prev_hash != prev or _row_hash(row) != row.hash:
            return False
        prev = row.hash
    return True


def record(engine: Engine, **event: Any) -> AuditEvent:
    """`append` in a session of its own (see `append` for the arguments)."""
    with Session(engine, expire_on_commit=False) as session:
        return append(session, **event)


def trail_of(engine: Engine, request_id: str) -> list[AuditEvent]:
    with Session(engine, expire_on_commit=False) as session:
        return trail(session, request_id)
