"""The built-in provider's own state (`LocalFlow`, `LocalSigner`, `LocalEvent`).

Signatures race (two signers of a parallel group sign at once; one person in two tabs), so every
change is a conditional update in one transaction: the flow advances only from the version that
was signed on top of, and a signer is marked only while their link is still the open one.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import func, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from store.tables import LocalDocument, LocalEvent, LocalFlow, LocalSigner

FINAL_SIGNER_STATES = ("signed", "declined", "replaced")  # replaced: someone else signs in their place


class Refused(Exception):
    """The signer's row is not in the state the change needs (the link died meanwhile): rolled back."""


def flow(engine: Engine, flow_id: str) -> LocalFlow | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(LocalFlow, flow_id)


def create(engine: Engine, new: LocalFlow, signers: list[LocalSigner],
           documents: list[LocalDocument] | None = None) -> None:
    """The flow, its signers and documents, once: a concurrent retry of the same activity may have created them."""
    with Session(engine) as session:
        if session.get(LocalFlow, new.flow_id) is not None:
            return
        session.add(new)
        session.add_all(signers)
        session.add_all(documents or [])
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            if session.get(LocalFlow, new.flow_id) is None:
                raise


def documents(engine: Engine, flow_id: str) -> list[LocalDocument]:
    """The flow's documents in order; empty for a flow made before flows had several (see `LocalDocument`)."""
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(select(LocalDocument).where(LocalDocument.flow_id == flow_id)
                                 .order_by(col(LocalDocument.position))).all())


def signers_in_group(engine: Engine, flow_id: str, group: int) -> list[LocalSigner]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(select(LocalSigner).where(LocalSigner.flow_id == flow_id, LocalSigner.group == group)
                                 .order_by(col(LocalSigner.position))).all())


def reopen(engine: Engine, tokens: dict[int, str], expires_at: datetime) -> set[int]:
    """Give each signer row its new token hash; never reopens someone who signed or declined since
    they were read. Returns the rows that got their token."""
    opened: set[int] = set()
    with engine.begin() as conn:
        for row_id, token_hash in tokens.items():
            if conn.execute(update(LocalSigner)
                            .where(col(LocalSigner.id) == row_id, col(LocalSigner.status).not_in(FINAL_SIGNER_STATES))
                            .values(token_hash=token_hash, status="open", token_expires_at=expires_at)).rowcount:
                opened.add(row_id)
    return opened


def replace_signer(engine: Engine, flow_id: str, old_id: str, new: LocalSigner) -> LocalSigner | None:
    """`old_id` is `replaced` (their link dies) and `new` takes their group, position and document
    placements, in one transaction; None when `old_id` signed or declined meanwhile. Run again
    (a retried activity), it returns the replacement already in place."""
    with Session(engine, expire_on_commit=False) as session:
        old = session.exec(select(LocalSigner).where(LocalSigner.flow_id == flow_id,
                                                     LocalSigner.signer_id == old_id)).first()
        there = session.exec(select(LocalSigner).where(LocalSigner.flow_id == flow_id,
                                                       LocalSigner.signer_id == new.signer_id)).first()
        if old is not None and old.status == "replaced":
            return there
        if old is None or old.status in FINAL_SIGNER_STATES:
            return None
        old.status = "replaced"  # the token stays: its page says someone else signs instead
        new.group, new.position = old.group, old.position
        session.add(old)
        session.add(new)
        for doc in session.exec(select(LocalDocument).where(LocalDocument.flow_id == flow_id)).all():
            spots = json.loads(doc.placements or "{}")
            if old_id in spots:
                spots[new.signer_id] = spots.pop(old_id)
                doc.placements = json.dumps(spots, ensure_ascii=False)
                session.add(doc)
        session.commit()
        return new


def events(engine: Engine, flow_id: str) -> list[LocalEvent]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(select(LocalEvent).where(LocalEvent.flow_id == flow_id)
                                 .order_by(col(LocalEvent.occurred_at), col(LocalEvent.event_id))).all())


def event(engine: Engine, event_id: str) -> LocalEvent | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(LocalEvent, event_id)


def revoke(engine: Engine, flow_id: str) -> None:
    """An open flow ends revoked and the links of everyone who has not acted die."""
    with engine.begin() as conn:
        if conn.execute(update(LocalFlow).where(col(LocalFlow.flow_id) == flow_id, col(LocalFlow.status) == "open")
                        .values(status="revoked")).rowcount:
            _kill_pending(conn, flow_id)


def by_token_hash(engine: Engine, token_hash: str) -> tuple[LocalSigner, LocalFlow] | None:
    with Session(engine, expire_on_commit=False) as session:
        signer = session.exec(select(LocalSigner).where(LocalSigner.token_hash == token_hash)).first()
        found = session.get(LocalFlow, signer.flow_id) if signer is not None else None
    return (signer, found) if signer is not None and found is not None else None


def signer_and_flow(engine: Engine, signer_row_id: int | None) -> tuple[LocalSigner | None, LocalFlow | None]:
    with Session(engine, expire_on_commit=False) as session:
        signer = session.get(LocalSigner, signer_row_id)
        return signer, session.get(LocalFlow, signer.flow_id) if signer else None


def commit_signature(engine: Engine, signer: LocalSigner, token_hash: str, read_version: int, new_key: str,
                     now: datetime, ip: str | None, user_agent: str | None, signed: LocalEvent,
                     document_keys: dict[int, str] | None = None, verification: str | None = None) -> bool:
    """Advance the flow from `read_version` and mark the signer signed, atomically; the last
    signature completes the flow. False when another signature advanced it first (sign again on
    top of it); `Refused` when the link died meanwhile (revoked, replaced, signed in another tab)."""
    with engine.begin() as conn:
        advanced = conn.execute(
            update(LocalFlow)
            .where(col(LocalFlow.flow_id) == signer.flow_id, col(LocalFlow.version) == read_version,
                   col(LocalFlow.status) == "open")
            .values(current_blob_key=new_key, current_sha256=new_key, version=col(LocalFlow.version) + 1)
        ).rowcount
        if not advanced:
            return False
        for position, key in (document_keys or {}).items():
            conn.execute(update(LocalDocument).where(col(LocalDocument.flow_id) == signer.flow_id,
                                                     col(LocalDocument.position) == position)
                         .values(current_blob_key=key))
        _mark(conn, signer, token_hash, status="signed", acted_at=now, ip=ip, user_agent=user_agent,
              verification=verification)
        _insert(conn, signed)
        unsigned = conn.execute(sa_select(func.count()).select_from(LocalSigner).where(
            col(LocalSigner.flow_id) == signer.flow_id,
            col(LocalSigner.status).not_in(("signed", "replaced")))).scalar_one()
        if unsigned == 0:
            conn.execute(update(LocalFlow).where(col(LocalFlow.flow_id) == signer.flow_id).values(status="completed"))
    return True


def decline(engine: Engine, signer: LocalSigner, token_hash: str, declined: LocalEvent, ip: str | None,
            user_agent: str | None) -> None:
    """End the open flow declined, mark the signer, kill every other pending link; `Refused` otherwise."""
    with engine.begin() as conn:
        if not conn.execute(update(LocalFlow).where(col(LocalFlow.flow_id) == signer.flow_id,
                                                    col(LocalFlow.status) == "open")
                            .values(status="declined")).rowcount:
            raise Refused
        _mark(conn, signer, token_hash, status="declined", acted_at=declined.occurred_at,
              decline_reason=declined.reason, ip=ip, user_agent=user_agent)
        _kill_pending(conn, signer.flow_id)
        _insert(conn, declined)


def _mark(conn: Connection, signer: LocalSigner, token_hash: str, **values: object) -> None:
    """The signer's change, only while this link is their open one (else the transaction rolls back)."""
    if not conn.execute(update(LocalSigner).where(col(LocalSigner.id) == signer.id, col(LocalSigner.status) == "open",
                                                  col(LocalSigner.token_hash) == token_hash)
                        .values(**values)).rowcount:
        raise Refused


def _insert(conn: Connection, row: LocalEvent) -> None:
    conn.execute(insert(LocalEvent).values(event_id=row.event_id, flow_id=row.flow_id, kind=row.kind,
                                           signer_id=row.signer_id, reason=row.reason, occurred_at=row.occurred_at))


def add_event(engine: Engine, row: LocalEvent) -> bool:
    """Store an event once (e.g. a link locked after too many wrong codes); False if it exists."""
    try:
        with engine.begin() as conn:
            _insert(conn, row)
    except IntegrityError:
        return False
    return True


def _kill_pending(conn: Connection, flow_id: str) -> None:
    conn.execute(update(LocalSigner)
                 .where(col(LocalSigner.flow_id) == flow_id, col(LocalSigner.status).not_in(FINAL_SIGNER_STATES))
                 .values(status="dead"))


# ---- the outbox: delivering events to their workflow --------------------------------------


def mark_delivered(engine: Engine, event_id: str, at: datetime) -> None:
    """The event reached its workflow (or has nowhere left to go): the relay leaves it alone."""
    with engine.begin() as conn:
        conn.execute(update(LocalEvent).where(col(LocalEvent.event_id) == event_id,
                                              col(LocalEvent.delivered_at).is_(None))
                     .values(delivered_at=at))


def undelivered(engine: Engine, now: datetime, older_than: datetime, limit: int = 100) -> list[LocalEvent]:
    """Events no delivery has confirmed, stored before `older_than` (a live delivery may still be
    on its way for younger ones) and due for another try at `now`, oldest first."""
    with Session(engine, expire_on_commit=False) as session:
        due = (col(LocalEvent.next_delivery_at).is_(None)) | (col(LocalEvent.next_delivery_at) <= now)
        return list(session.exec(select(LocalEvent).where(col(LocalEvent.delivered_at).is_(None),
                                                          col(LocalEvent.occurred_at) <= older_than, due)
                                 .order_by(col(LocalEvent.occurred_at)).limit(limit)).all())


def claim_delivery(engine: Engine, row: LocalEvent, retry_at: datetime) -> bool:
    """Take `row` for one delivery try, the next one not before `retry_at`. False when another relay
    (another worker process) took it first: it counts attempts, so only one claim per attempt wins."""
    with engine.begin() as conn:
        return bool(conn.execute(
            update(LocalEvent).where(col(LocalEvent.event_id) == row.event_id, col(LocalEvent.delivered_at).is_(None),
                                     col(LocalEvent.delivery_attempts) == row.delivery_attempts)
            .values(delivery_attempts=row.delivery_attempts + 1, next_delivery_at=retry_at)).rowcount)
