"""Bulk sends (`BulkSend`) and their CSV rows (`BulkRow`): what the workflow pages through and what
`GET /api/v1/bulk-sends/{id}/rows` and the CLI's summary read.

Every write is idempotent: the bulk's row by its id, each CSV row by (`bulk_id`, `row_key`), so
the activity that loads a CSV can run again after a worker died half-way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.db import insert_once
from store.tables import BulkRow, BulkSend, SigningRequestRecord

SAVE_BATCH = 500


def create(engine: Engine, bulk: BulkSend) -> bool:
    """True when this call created it."""
    return insert_once(engine, bulk)


def get(engine: Engine, bulk_id: str) -> BulkSend | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(BulkSend, bulk_id)


def set_status(engine: Engine, bulk_id: str, status: str) -> None:
    with Session(engine) as session:
        row = session.get(BulkSend, bulk_id)
        if row is not None and row.status != status:
            row.status = status
            session.add(row)
            session.commit()


def save_rows(engine: Engine, bulk_id: str, rows: Sequence[BulkRow]) -> None:
    """Insert the rows this bulk does not have yet (a retried load adds nothing twice)."""
    with Session(engine) as session:
        have = set(session.exec(select(BulkRow.row_key).where(BulkRow.bulk_id == bulk_id)).all())
        fresh = [r for r in rows if r.row_key not in have]
        for start in range(0, len(fresh), SAVE_BATCH):
            session.add_all(fresh[start:start + SAVE_BATCH])
            session.commit()


def good_rows_after(engine: Engine, bulk_id: str, after_line: int, limit: int) -> list[BulkRow]:
    """The next rows without a problem, in CSV order."""
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(
            select(BulkRow).where(BulkRow.bulk_id == bulk_id, col(BulkRow.problem).is_(None), BulkRow.line > after_line)
            .order_by(col(BulkRow.line)).limit(limit)).all())


def existing_requests(engine: Engine, request_ids: Sequence[str]) -> set[str]:
    """Which of these signing requests exist already (started by any bulk send, or any run)."""
    if not request_ids:
        return set()
    with Session(engine) as session:
        return set(session.exec(select(SigningRequestRecord.request_id)
                                .where(col(SigningRequestRecord.request_id).in_(list(request_ids)))).all())


@dataclass(frozen=True)
class RowState:
    """One CSV row as a person reads it: its line, what it holds, why it was not sent or how its request is."""

    line: int
    row_key: str
    values: dict[str, str]
    problem: str | None
    request_id: str | None
    status: str | None  # the request's status; None while it was not started
    sent_by: str | None  # the bulk send that started the request, when it was another one


def rows(engine: Engine, bulk_id: str, limit: int = 100_000) -> list[RowState]:
    with Session(engine) as session:
        found = session.exec(select(BulkRow, SigningRequestRecord)
                             .join(SigningRequestRecord,
                                   col(SigningRequestRecord.request_id) == col(BulkRow.request_id), isouter=True)
                             .where(BulkRow.bulk_id == bulk_id).order_by(col(BulkRow.line)).limit(limit)).all()
        return [RowState(line=r.line, row_key=r.row_key, values=json.loads(r.values), problem=r.problem,
                         request_id=r.request_id if req is not None else None, status=req.status if req else None,
                         sent_by=req.bulk_id if req is not None and req.bulk_id != bulk_id else None)
                for r, req in found]
