"""Registered organisations (`Organisation` rows; seal images are in the blob store)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.tables import Organisation, utcnow


@dataclass(frozen=True)
class Keeper:
    """A seal keeper (印章管理员): a chat user id, and a name for cards."""

    id: str
    name: str


def keepers_of(row: Organisation) -> list[Keeper]:
    return [Keeper(k["id"], k.get("name") or k["id"]) for k in json.loads(row.keepers or "[]")]


def provider_ids_of(row: Organisation) -> dict[str, str]:
    return dict(json.loads(row.provider_ids or "{}"))


def get(engine: Engine, credit_code: str) -> Organisation | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Organisation, credit_code)


def by_name(engine: Engine, name: str) -> Organisation | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.exec(select(Organisation).where(Organisation.name == name)).first()


def all_organisations(engine: Engine) -> list[Organisation]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(select(Organisation).order_by(col(Organisation.name))).all())


def save(engine: Engine, org: Organisation) -> Organisation:
    """Add the organisation, or update the one with its credit code; returns the stored row."""
    with Session(engine, expire_on_commit=False) as session:
        row = session.get(Organisation, org.credit_code)
        if row is None:
            row = org
        else:
            for key in ("name", "seal_image_key", "keepers", "requires_seal_approval", "provider_ids"):
                setattr(row, key, getattr(org, key))
            row.updated_at = utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
        return row
