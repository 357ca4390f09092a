"""provider links (SignBridge-hosted chat links to DocuSign embedded signing)

Revision ID: 7c3f9a1e2b64
Revises: 5b1e0c2d7a91
Create Date: 2026-11-29 07:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "7c3f9a1e2b64"
down_revision: str | None = "5b1e0c2d7a91"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_links",
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("flow_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("signer_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
        sa.UniqueConstraint("provider", "flow_id", "signer_id"),
    )
    with op.batch_alter_table("provider_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_provider_links_flow_id"), ["flow_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("provider_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_provider_links_flow_id"))
    op.drop_table("provider_links")
