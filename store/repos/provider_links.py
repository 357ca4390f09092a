"""SignBridge-hosted links to a provider's short-lived signing page (`ProviderLink`, DocuSign embedded).

Only the token's SHA-256 is stored; one row per (provider, flow, signer): minting replaces.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from store.db import committed
from store.tables import ProviderLink


def replace(engine: Engine, link: ProviderLink) -> bool:
    """The signer's link from now on (the previous one dies); False when a concurrent mint won."""
    with Session(engine) as session:
        session.execute(delete(ProviderLink).where(
            col(ProviderLink.provider) == link.provider, col(ProviderLink.flow_id) == link.flow_id,
            col(ProviderLink.signer_id) == link.signer_id))
        session.add(link)
        return committed(session)


def by_token_hash(engine: Engine, token_hash: str) -> ProviderLink | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(ProviderLink, token_hash)
