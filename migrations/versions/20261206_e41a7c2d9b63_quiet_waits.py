"""quiet waits: the built-in provider's event outbox and each provider's last verified webhook

Revision ID: e41a7c2d9b63
Revises: b7c3d91e5f20
Create Date: 2026-12-06 00:00:00

`local_events` gains `delivered_at`, `delivery_attempts` and `next_delivery_at`: the signing page
marks what it delivered, the worker's relay signals the rest again until it arrives.
`provider_webhooks_seen` keeps when each provider's last verified webhook arrived.

Existing events count as delivered, except those of requests still open: the relay signals those
once more (the workflow drops what it has seen by event id), so a delivery lost before this release
is not left to a deadline.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = 'e41a7c2d9b63'
down_revision: str | None = 'b7c3d91e5f20'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('provider_webhooks_seen',
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('last_verified_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('provider')
    )
    with op.batch_alter_table('local_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delivered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('delivery_attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('next_delivery_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_local_events_delivered_at'), ['delivered_at'], unique=False)
    op.execute(
        "UPDATE local_events SET delivered_at = occurred_at WHERE flow_id NOT IN ("
        " SELECT f.flow_id FROM local_flows f JOIN signing_requests r ON r.request_id = f.request_id"
        " WHERE r.status IN ('PREPARING', 'IN_PROGRESS', 'FINISHING', 'STUCK'))")


def downgrade() -> None:
    with op.batch_alter_table('local_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_local_events_delivered_at'))
        batch_op.drop_column('next_delivery_at')
        batch_op.drop_column('delivery_attempts')
        batch_op.drop_column('delivered_at')
    op.drop_table('provider_webhooks_seen')
