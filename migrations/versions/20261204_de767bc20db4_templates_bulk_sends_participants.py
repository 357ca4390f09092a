"""templates, several documents per built-in flow, bulk sends, request participants, switches, request snapshots

Revision ID: de767bc20db4
Revises: a4e8c1f20b37
Create Date: 2026-12-08 09:00:00

The `signing_requests` row gains the last published view of its flow (`snapshot`), so listing,
searching and downloading read the database, not Temporal, and a request outlives its history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = 'de767bc20db4'
down_revision: str | None = 'a4e8c1f20b37'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('bulk_rows',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('bulk_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('row_key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('line', sa.Integer(), nullable=False),
    sa.Column('values', sa.Text(), nullable=False),
    sa.Column('problem', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('bulk_id', 'row_key')
    )
    with op.batch_alter_table('bulk_rows', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bulk_rows_bulk_id'), ['bulk_id'], unique=False)

    op.create_table('bulk_sends',
    sa.Column('bulk_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('template', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('initiator_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('chat_platform', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tenant', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('chat_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('bulk_id')
    )
    op.create_table('local_documents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flow_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('original_sha256', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('current_blob_key', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('placements', sa.Text(), server_default='{}', nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('flow_id', 'position')
    )
    with op.batch_alter_table('local_documents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_local_documents_flow_id'), ['flow_id'], unique=False)

    op.create_table('request_participants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('platform', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('person_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('request_id', 'person_id', 'role')
    )
    with op.batch_alter_table('request_participants', schema=None) as batch_op:
        batch_op.create_index('ix_request_participants_person', ['platform', 'person_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_request_participants_request_id'), ['request_id'], unique=False)

    op.create_table('switches',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('on', sa.Boolean(), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('set_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('set_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('templates',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('source_name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('fields', sa.Text(), nullable=False),
    sa.Column('roles', sa.Text(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('signing_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('snapshot', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('bulk_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.create_index(batch_op.f('ix_signing_requests_bulk_id'), ['bulk_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('signing_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signing_requests_bulk_id'))
        batch_op.drop_column('bulk_id')
        batch_op.drop_column('snapshot')

    op.drop_table('templates')
    op.drop_table('switches')
    with op.batch_alter_table('request_participants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_request_participants_request_id'))
        batch_op.drop_index('ix_request_participants_person')

    op.drop_table('request_participants')
    with op.batch_alter_table('local_documents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_local_documents_flow_id'))

    op.drop_table('local_documents')
    op.drop_table('bulk_sends')
    with op.batch_alter_table('bulk_rows', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bulk_rows_bulk_id'))

    op.drop_table('bulk_rows')
