"""Operators' switches (`Switch` rows): `pause` turns new signing requests away during an incident."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session

from store.tables import Switch, utcnow

PAUSE = "pause"


def get(engine: Engine, name: str) -> Switch | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Switch, name)


def set_switch(engine: Engine, name: str, on: bool, reason: str, by: str) -> None:
    with Session(engine) as session:
        row = session.get(Switch, name) or Switch(name=name)
        row.on, row.reason, row.set_by, row.set_at = on, reason, by, utcnow()
        session.add(row)
        session.commit()
