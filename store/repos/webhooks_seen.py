"""Each provider's last verified webhook (`ProviderWebhookSeen`): evidence that its webhooks reach us."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from store.tables import ProviderWebhookSeen


def record(engine: Engine, provider: str, at: datetime) -> None:
    """Remember `at` as `provider`'s latest verified webhook (it never moves back in time)."""
    with engine.begin() as conn:
        if conn.execute(update(ProviderWebhookSeen).where(col(ProviderWebhookSeen.provider) == provider,
                                                          col(ProviderWebhookSeen.last_verified_at) < at)
                        .values(last_verified_at=at)).rowcount:
            return
    with Session(engine) as session:
        if session.get(ProviderWebhookSeen, provider) is not None:
            return  # as recent or later already
        session.add(ProviderWebhookSeen(provider=provider, last_verified_at=at))
        try:
            session.commit()
        except IntegrityError:  # another process recorded its first one meanwhile
            session.rollback()


def last_verified(engine: Engine, provider: str) -> datetime | None:
    """When `provider`'s last verified webhook arrived; None if none ever did."""
    with Session(engine) as session:
        row = session.get(ProviderWebhookSeen, provider)
        return row.last_verified_at if row is not None else None
