"""The long-connection listener's durable inbox (`InboundEvent` rows): stored before the ack."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.db import insert_once
from store.tables import InboundEvent, utcnow


def _row(session: Session, platform: str, event_id: str) -> InboundEvent | None:
    return session.exec(select(InboundEvent).where(InboundEvent.platform == platform,
                                                   InboundEvent.event_id == event_id)).first()


def store(engine: Engine, platform: str, event_id: str, payload: str) -> bool:
    """Commit the event; False when this event id was stored before (a redelivery)."""
    return insert_once(engine, InboundEvent(platform=platform, event_id=event_id, payload=payload))


def get(engine: Engine, platform: str, event_id: str) -> InboundEvent | None:
    with Session(engine, expire_on_commit=False) as session:
        return _row(session, platform, event_id)


def waiting(engine: Engine, platforms: list[str]) -> list[tuple[str, str]]:
    """(platform, event_id) of every event still `stored`, oldest first."""
    with Session(engine) as session:
        query = select(InboundEvent).where(InboundEvent.status == "stored", col(InboundEvent.platform).in_(platforms))
        return [(r.platform, r.event_id) for r in session.exec(query.order_by(col(InboundEvent.id)))]


def mark(engine: Engine, platform: str, event_id: str, status: str) -> None:
    with Session(engine) as session:
        row = _row(session, platform, event_id)
        assert row is not None  # rows are never deleted
        row.status, row.handled_at = status, utcnow()
        session.add(row)
        session.commit()
