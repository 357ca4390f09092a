"""approval mappings: which approval definitions start signing, and which form fields hold what

Revision ID: b7d2e91c4a10
Revises: de767bc20db4
Create Date: 2026-12-05 02:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = 'b7d2e91c4a10'
down_revision: str | None = 'de767bc20db4'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('approval_mappings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('platform', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tenant', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('definition', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('document_fields', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('signer_field', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('counterparty_field', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('counterparty_first', sa.Boolean(), nullable=False),
    sa.Column('chat_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('platform', 'tenant', 'definition')
    )
    with op.batch_alter_table('approval_mappings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_approval_mappings_platform'), ['platform'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('approval_mappings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_approval_mappings_platform'))
    op.drop_table('approval_mappings')
