"""validated PDF versions: finish validates only the signatures added since

Revision ID: e4a7c2b9d315
Revises: e41a7c2d9b63
Create Date: 2026-12-06 00:00:00

`validated_versions` keeps, per SHA-256 of a signed version whose signatures all validated, the
reports of those signatures; a later version extending it byte for byte is validated incrementally.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = 'e4a7c2b9d315'
down_revision: str | None = 'e41a7c2d9b63'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('validated_versions',
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('signatures', sa.Integer(), nullable=False),
    sa.Column('reports', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('validated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('sha256')
    )


def downgrade() -> None:
    op.drop_table('validated_versions')
