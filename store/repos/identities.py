"""Chat users ↔ contact data: the user-directory cache every chat connector shares.

Rows come from the platforms' directories (refreshed by `connectors.chat.directory`), from the
signers a flow resolved, and from `signbridge identities import`. An imported row may leave the
tenant empty ("default"): it then counts for every tenant of its platform, after the tenant's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from store.tables import Identity, utcnow

DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Contact:
    """What a directory (or an import) says about one user; None fields keep what is stored."""

    name: str
    email: str | None = None
    mobile: str | None = None
    active: bool | None = None
    external: bool | None = None


def _candidates(platform: str, tenant: str) -> SelectOfScalar[Identity]:
    return select(Identity).where(Identity.platform == platform,
                                  col(Identity.tenant).in_([tenant, DEFAULT_TENANT]))


def _best(rows: Iterable[Identity], tenant: str) -> Identity | None:
    """The tenant's own row before an imported one; an active person before a departed one."""
    ordered = sorted(rows, key=lambda r: (not r.active, r.tenant != tenant))
    return ordered[0] if ordered else None


def find(engine: Engine, platform: str, tenant: str, user_id: str) -> Identity | None:
    with Session(engine, expire_on_commit=False) as session:
        rows = session.exec(_candidates(platform, tenant).where(
            Identity.user_id == user_id)).all()
    return _best(rows, tenant)


def find_by_name(engine: Engine, platform: str, tenant: str, name: str) -> Identity | None:
    with Session(engine, expire_on_commit=False) as session:
        rows = session.exec(_candidates(platform, tenant).where(
            Identity.name == name)).all()
    return _best(rows, tenant)


def name_of(engine: Engine, platform: str, tenant: str, user_id: str) -> str:
    """The name we know for a user id; "" when we know none (events often carry ids only)."""
    row = find(engine, platform, tenant, user_id)
    return row.name if row is not None else ""


def fresh(engine: Engine, platform: str, tenant: str, user_id: str, max_age: timedelta) -> Identity | None:
    """The row if it was written within `max_age` (else the directory should be asked again)."""
    row = find(engine, platform, tenant, user_id)
    if row is None:
        return None
    updated = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
    return row if datetime.now(UTC) - updated <= max_age else None


def inactive(engine: Engine, platform: str, tenant: str, user_ids: list[str]) -> list[Identity]:
    """The people among `user_ids` known to have left (or been deactivated)."""
    if not user_ids:
        return []
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(_candidates(platform, tenant).where(
            col(Identity.user_id).in_(user_ids), Identity.active == False)).all())  # noqa: E712


def remember(engine: Engine, platform: str, tenant: str, user_id: str, contact: Contact) -> Identity:
    """Upsert the tenant's row for `user_id`; an email or mobile the contact lacks is kept from
    what we knew (the tenant's row, else an imported one)."""
    with Session(engine, expire_on_commit=False) as session:
        rows = session.exec(_candidates(platform, tenant).where(
            Identity.user_id == user_id)).all()
        known = _best(rows, tenant)
        row = next((r for r in rows if r.tenant == tenant), None)
        if row is None:
            row = Identity(platform=platform, tenant=tenant, user_id=user_id, name=contact.name)
        row.name = contact.name or row.name
        row.email = contact.email or row.email or (known.email if known else None)
        row.mobile = contact.mobile or row.mobile or (known.mobile if known else None)
        if contact.active is not None:
            row.active = contact.active
        if contact.external is not None:
            row.external = contact.external
        row.updated_at = utcnow()
        session.add(row)
        session.commit()
        return row


def mark_departed(engine: Engine, platform: str, tenant: str, user_id: str) -> None:
    """A platform said this user left (or was deactivated): no new request may name them."""
    remember(engine, platform, tenant, user_id, Contact(name="", active=False))


def import_rows(engine: Engine, rows: list[tuple[str, str, str, Contact]]) -> tuple[int, int]:
    """(platform, tenant, user_id, contact) rows in one transaction, all or nothing; returns (created, updated)."""
    created = updated = 0
    with Session(engine) as session:
        for platform, tenant, user_id, contact in rows:
            row = session.exec(select(Identity).where(Identity.platform == platform, Identity.tenant == tenant,
                                                      Identity.user_id == user_id)).first()
            if row is None:
                row = Identity(platform=platform, tenant=tenant, user_id=user_id, name=contact.name)
                created += 1
            else:
                updated += 1
            row.name = contact.name
            for column in ("email", "mobile", "active", "external"):  # a blank cell keeps what is stored
                if getattr(contact, column) is not None:
                    setattr(row, column, getattr(contact, column))
            row.updated_at = utcnow()
            session.add(row)
        session.commit()
    return created, updated


def listed(engine: Engine, platform: str | None = None, tenant: str | None = None) -> list[Identity]:
    stmt = select(Identity).order_by(Identity.platform, Identity.tenant, Identity.user_id)  # type: ignore[arg-type]
    if platform:
        stmt = stmt.where(Identity.platform == platform.lower())
    if tenant:
        stmt = stmt.where(Identity.tenant == tenant)
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(stmt))
