"""Chat single sign-on tickets (`SsoTicket`): OAuth states, verified browser sessions, used assertions.

Every secret is looked up by its SHA-256 only; a state is consumed by one conditional update, so
two callbacks racing with the same `state` cannot both succeed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from store.tables import SsoTicket


def add(engine: Engine, ticket: SsoTicket) -> bool:
    """Store a new ticket; False when one with the same hash exists (an assertion seen before)."""
    with Session(engine) as session:
        session.add(ticket)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return False
    return True


def get(engine: Engine, key_hash: str) -> SsoTicket | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(SsoTicket, key_hash)


def consume(engine: Engine, key_hash: str, kind: str, now: datetime) -> SsoTicket | None:
    """Use a ticket once: the ticket when it was unused and unexpired, else None (missing, used,
    expired — the row still says which, for the audit trail)."""
    with engine.begin() as conn:
        done = conn.execute(update(SsoTicket)
                            .where(col(SsoTicket.key_hash) == key_hash, col(SsoTicket.kind) == kind,
                                   col(SsoTicket.used_at).is_(None), col(SsoTicket.expires_at) > now)
                            .values(used_at=now)).rowcount
    return get(engine, key_hash) if done else None


def live_session(engine: Engine, key_hash: str, token_hash: str, now: datetime) -> SsoTicket | None:
    """The verified session behind a cookie, if it is for this link and has not expired."""
    ticket = get(engine, key_hash)
    if ticket is None or ticket.kind != "session" or ticket.token_hash != token_hash:
        return None
    expires = ticket.expires_at if ticket.expires_at.tzinfo else ticket.expires_at.replace(tzinfo=now.tzinfo)
    return ticket if expires > now else None


def purge(engine: Engine, before: datetime) -> int:
    """Drop tickets that expired before `before` (an assertion's row is needed only until then)."""
    with engine.begin() as conn:
        return conn.execute(delete(SsoTicket).where(col(SsoTicket.expires_at) < before)).rowcount
