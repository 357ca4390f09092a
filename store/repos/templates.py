"""Registered templates (`Template` rows; the PDF itself is in the blob store)."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.tables import Template, utcnow


def get(engine: Engine, name: str) -> Template | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Template, name)


def all_templates(engine: Engine) -> list[Template]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(select(Template).order_by(col(Template.name))).all())


def save(engine: Engine, template: Template) -> None:
    """Add, or replace the template of that name (a new version of the contract). `template` stays
    readable afterwards: `signbridge templates add` prints it."""
    with Session(engine, expire_on_commit=False) as session:
        row = session.get(Template, template.name)
        if row is None:
            session.add(template)
        else:
            for key in ("sha256", "source_name", "fields", "roles", "created_by"):
                setattr(row, key, getattr(template, key))
            row.created_at = utcnow()
            session.add(row)
        session.commit()


def delete(engine: Engine, name: str) -> bool:
    with Session(engine) as session:
        row = session.get(Template, name)
        if row is None:
            return False
        session.delete(row)
        session.commit()
        return True
