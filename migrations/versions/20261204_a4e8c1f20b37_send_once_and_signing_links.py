"""send once (sent_messages state, attempts) and sealed signing links"""

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

from migrations.helpers import Table

revision = "a4e8c1f20b37"
down_revision = "4e8a1c7b2d90"

SIGNING_LINKS = Table("signing_links", "id:int request_id signer_key:str64 sealed_url:text updated_at:time",
                      unique=("request_id signer_key",), index=("request_id",))


def upgrade() -> None:
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        # Rows from before were recorded after a confirmed delivery: they are `sent`.
        batch_op.add_column(sa.Column("state", AutoString(), server_default="sent", nullable=False))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("last_attempt_at", UTCDateTime(), nullable=True))
    SIGNING_LINKS.create()


def downgrade() -> None:
    SIGNING_LINKS.drop()
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        batch_op.drop_column("last_attempt_at")
        batch_op.drop_column("attempts")
        batch_op.drop_column("state")
