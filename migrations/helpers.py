"""Tables as the migrations create them: one line of columns per table, the downgrade derived.

Autogenerate writes one `sa.Column(...)` call per column and a hand-written downgrade that must
mirror the upgrade. Here a table is a `Table` whose columns are spelled the way SQLModel makes
them — a bare name is a NOT NULL string (`AutoString`), `name:type` another type, a trailing `?`
allows NULL — and `tables(...)` gives a revision both functions: the upgrade creates the tables
in order, the downgrade drops them in reverse (their indexes go with them). The schema is the one
autogenerate wrote: the same types, constraints and index names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

TYPES: dict[str, Callable[[], sa.types.TypeEngine]] = {
    "str": AutoString,
    "str64": lambda: AutoString(length=64),  # a SHA-256 in hex
    "int": sa.Integer,
    "bool": sa.Boolean,
    "text": sa.Text,
    "time": UTCDateTime,
}


def columns(spec: str) -> list[sa.Column]:
    """`"id:int name email? created_at:time"` → NOT NULL integer, NOT NULL string, nullable
    string, NOT NULL UTC datetime."""
    made = []
    for word in spec.split():
        name, _, kind = word.removesuffix("?").partition(":")
        made.append(sa.Column(name, TYPES[kind or "str"](), nullable=word.endswith("?")))
    return made


@dataclass(frozen=True)
class Table:
    """`key`: the primary key's columns; `unique`: one entry per constraint ("a b" = over a and b);
    `index`: columns with their own index, named `ix_<table>_<column>`."""

    name: str
    columns: str
    key: str = "id"
    unique: tuple[str, ...] = ()
    index: tuple[str, ...] = ()

    def create(self) -> None:
        op.create_table(self.name, *columns(self.columns), sa.PrimaryKeyConstraint(*self.key.split()),
                        *(sa.UniqueConstraint(*u.split()) for u in self.unique))
        for column in self.index:
            op.create_index(op.f(f"ix_{self.name}_{column}"), self.name, [column], unique=False)

    def drop(self) -> None:
        op.drop_table(self.name)


def tables(*created: Table) -> tuple[Callable[[], None], Callable[[], None]]:
    """`upgrade, downgrade` for a revision that only adds tables."""

    def upgrade() -> None:
        for table in created:
            table.create()

    def downgrade() -> None:
        for table in reversed(created):
            table.drop()

    return upgrade, downgrade
