"""signing_requests.certificate_sha256: the certificate of completion once issued

Revision ID: c3f1e7a9b240
Revises: 3c5e7a9b1d24
Create Date: 2026-12-05 02:00:00

Every download of a request's certificate of completion is the same signed file the chat
received: its blob key is kept on the request's row.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = 'c3f1e7a9b240'
down_revision: str | None = '3c5e7a9b1d24'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('signing_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('certificate_sha256', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('signing_requests', schema=None) as batch_op:
        batch_op.drop_column('certificate_sha256')
