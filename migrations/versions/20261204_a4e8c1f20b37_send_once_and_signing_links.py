"""send once (sent_messages state, attempts) and sealed signing links

Revision ID: a4e8c1f20b37
Revises: 4e8a1c7b2d90
Create Date: 2026-12-04 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "a4e8c1f20b37"
down_revision: str | None = "4e8a1c7b2d90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        # Rows from before were recorded after a confirmed delivery: they are `sent`.
        batch_op.add_column(sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), server_default="sent",
                                      nullable=False))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("last_attempt_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.create_table(
        "signing_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("signer_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("sealed_url", sa.Text(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "signer_key"),
    )
    with op.batch_alter_table("signing_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signing_links_request_id"), ["request_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("signing_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signing_links_request_id"))
    op.drop_table("signing_links")
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        batch_op.drop_column("last_attempt_at")
        batch_op.drop_column("attempts")
        batch_op.drop_column("state")
