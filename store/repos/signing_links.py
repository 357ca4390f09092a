"""Signers' links, sealed (`signbridge.link_vault`), by (request, signer): see `SigningLinkRecord`."""

from __future__ import annotations

import hashlib

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from store.tables import SigningLinkRecord, utcnow


def signer_key(signer_id: str) -> str:
    return hashlib.sha256(signer_id.encode()).hexdigest()


def remember(engine: Engine, request_id: str, sealed: dict[str, str | None]) -> None:
    """Store each signer's sealed link; None forgets it (the provider notifies that signer itself).

    Idempotent: a retried `open_group` overwrites what its earlier attempt stored.
    """
    with Session(engine) as session:
        for signer_id, value in sealed.items():
            where = (col(SigningLinkRecord.request_id) == request_id,
                     col(SigningLinkRecord.signer_key) == signer_key(signer_id))
            row = session.exec(select(SigningLinkRecord).where(*where)).first()
            if value is None:
                session.execute(delete(SigningLinkRecord).where(*where))
            elif row is None:
                session.add(SigningLinkRecord(request_id=request_id, signer_key=signer_key(signer_id),
                                              sealed_url=value))
            else:
                row.sealed_url, row.updated_at = value, utcnow()
                session.add(row)
        try:
            session.commit()
        except IntegrityError:  # a concurrent attempt stored them first: the same links, or newer ones
            session.rollback()


def sealed_link(engine: Engine, request_id: str, signer_id: str) -> str | None:
    with Session(engine) as session:
        row = session.exec(select(SigningLinkRecord).where(
            SigningLinkRecord.request_id == request_id,
            SigningLinkRecord.signer_key == signer_key(signer_id))).first()
    return row.sealed_url if row else None


def forget(engine: Engine, request_id: str) -> None:
    """The flow ended: its links are dead at the provider and need not be kept."""
    with Session(engine) as session:
        session.execute(delete(SigningLinkRecord).where(col(SigningLinkRecord.request_id) == request_id))
        session.commit()
