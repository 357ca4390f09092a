"""organisations (credit code, seal image, keepers, seal approval, provider ids); organisation signers

Revision ID: 3c5e7a9b1d24
Revises: b7d2e91c4a10
Create Date: 2026-12-05 01:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '3c5e7a9b1d24'
down_revision: str | None = 'b7d2e91c4a10'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('organisations',
    sa.Column('credit_code', sqlmodel.sql.sqltypes.AutoString(length=18), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('seal_image_key', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('keepers', sa.Text(), nullable=False),
    sa.Column('requires_seal_approval', sa.Boolean(), nullable=False),
    sa.Column('provider_ids', sa.Text(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('credit_code'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('local_signers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('org_name', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('org_credit_code', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('seal', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('seal_kind', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('seal_image_key', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('local_signers', schema=None) as batch_op:
        batch_op.drop_column('seal_image_key')
        batch_op.drop_column('seal_kind')
        batch_op.drop_column('seal')
        batch_op.drop_column('org_credit_code')
        batch_op.drop_column('org_name')
    op.drop_table('organisations')
