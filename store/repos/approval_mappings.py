"""Approval definitions mapped to signing (`ApprovalMapping` rows, `signbridge approvals map`)."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.tables import ApprovalMapping, utcnow


def find(engine: Engine, platform: str, tenant: str, definition: str) -> ApprovalMapping | None:
    """The mapping of `definition`: the tenant's own first, else the one for every tenant ("")."""
    with Session(engine, expire_on_commit=False) as session:
        rows = session.exec(select(ApprovalMapping).where(
            ApprovalMapping.platform == platform, ApprovalMapping.definition == definition,
            col(ApprovalMapping.tenant).in_([tenant, ""]))).all()
    return next((r for r in rows if r.tenant == tenant), None) or next(iter(rows), None)


def all_mappings(engine: Engine) -> list[ApprovalMapping]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(select(ApprovalMapping).order_by(
            col(ApprovalMapping.platform), col(ApprovalMapping.tenant), col(ApprovalMapping.definition))).all())


def save(engine: Engine, mapping: ApprovalMapping) -> ApprovalMapping:
    """Add, or replace the mapping of that (platform, tenant, definition)."""
    with Session(engine, expire_on_commit=False) as session:
        row = session.exec(select(ApprovalMapping).where(
            ApprovalMapping.platform == mapping.platform, ApprovalMapping.tenant == mapping.tenant,
            ApprovalMapping.definition == mapping.definition)).first()
        if row is None:
            row = mapping
        else:
            for key in ("document_fields", "signer_field", "counterparty_field", "counterparty_first", "chat_id",
                        "provider"):
                setattr(row, key, getattr(mapping, key))
            row.created_at = utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
        return row


def remove(engine: Engine, platform: str, tenant: str, definition: str) -> bool:
    with Session(engine) as session:
        row = session.exec(select(ApprovalMapping).where(
            ApprovalMapping.platform == platform, ApprovalMapping.tenant == tenant,
            ApprovalMapping.definition == definition)).first()
        if row is None:
            return False
        session.delete(row)
        session.commit()
        return True
