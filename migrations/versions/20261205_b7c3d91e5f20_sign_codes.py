"""one-time codes for the built-in provider's signing page

Revision ID: b7c3d91e5f20
Revises: 5f0c2a9d7e13
Create Date: 2026-12-05 01:40:00

`sign_codes` keeps each code only as an HMAC; `local_signers` gains the resend clock, the count of
wrong codes, the lock, and how the signer was verified when they signed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = 'b7c3d91e5f20'
down_revision: str | None = '5f0c2a9d7e13'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('sign_codes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('signer_row', sa.Integer(), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('sent_to', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('code_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('used_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sign_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sign_codes_signer_row'), ['signer_row'], unique=False)
    with op.batch_alter_table('local_signers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_code_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('code_failures', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('locked_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('verification', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('local_signers', schema=None) as batch_op:
        batch_op.drop_column('verification')
        batch_op.drop_column('locked_until')
        batch_op.drop_column('code_failures')
        batch_op.drop_column('last_code_at')
    with op.batch_alter_table('sign_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sign_codes_signer_row'))
    op.drop_table('sign_codes')
