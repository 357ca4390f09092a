"""${message}"""

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
from migrations.helpers import Table, tables  # noqa: F401  (a revision that only adds tables: `tables(...)`)

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
