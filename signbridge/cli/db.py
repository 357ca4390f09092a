"""`signbridge db upgrade`: alembic `upgrade head`, safe on databases the app created itself.

Why the extra care: the worker and the API call `SQLModel.metadata.create_all` on start, so a
development (or hastily deployed) database often already holds every table but no
`alembic_version` row. A plain `alembic upgrade head` would then replay the first migration
and die with "table already exists". Stamping `head` blindly would be just as wrong when the
tables came from an *older* release: the newer revisions would never run.

So before upgrading we find the revision the existing schema actually matches: every revision's
schema is built once in a throw-away SQLite file (migrations are cheap and dialect-neutral for
table and column names) and compared with the live database by table and column names. The
newest exact match is `stamp`ed, then `upgrade head` runs the rest. The same check covers a
database whose `alembic_version` lags behind tables that `create_all` already added. A schema
that matches no revision is refused with the differences, never guessed at.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from store.files import private_file

Schema = dict[str, frozenset[str]]  # table -> column names

ROOT = Path(__file__).resolve().parents[2]


class SchemaMismatch(Exception):
    """The database has SignBridge tables that match no migration revision."""


@dataclass
class UpgradeReport:
    before: str | None  # alembic revision before, None if unversioned
    stamped: str | None = None  # revision we stamped because create_all had built it already
    after: str | None = None
    notes: list[str] = field(default_factory=list)


def driver_url(url: str) -> str:
    """Same driver choice as store/db.py and migrations/env.py (psycopg 3 for PostgreSQL)."""
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def alembic_config(url: str) -> Config:
    ini = ROOT / "alembic.ini"
    cfg = Config(str(ini)) if ini.exists() else Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    # ConfigParser interpolates `%`: URL-encoded passwords (p%40ss) must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _schema(engine: Engine, tables: set[str]) -> Schema:
    insp = inspect(engine)
    return {t: frozenset(c["name"] for c in insp.get_columns(t)) for t in insp.get_table_names() if t in tables}


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def revision_schemas(cfg: Config) -> list[tuple[str, Schema]]:
    """Each revision, base to head, with the tables and columns it leaves behind."""
    revisions = [r.revision for r in reversed(list(ScriptDirectory.from_config(cfg).walk_revisions()))]
    out: list[tuple[str, Schema]] = []
    with tempfile.TemporaryDirectory(prefix="signbridge-schema-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'scratch.db'}"
        scratch_cfg = alembic_config(url)
        engine = create_engine(url, poolclass=NullPool)
        try:
            for rev in revisions:
                command.upgrade(scratch_cfg, rev)
                insp = inspect(engine)
                out.append((rev, {t: frozenset(c["name"] for c in insp.get_columns(t))
                                  for t in insp.get_table_names() if t != "alembic_version"}))
        finally:
            engine.dispose()
    return out


def _describe(diff_from: Schema, actual: Schema) -> str:
    lines = []
    for t in sorted(set(diff_from) | set(actual)):
        if t not in actual:
            lines.append(f"missing table {t}")
        elif t not in diff_from:
            lines.append(f"unexpected table {t}")
        elif diff_from[t] != actual[t]:
            lines.append(f"{t}: missing {sorted(diff_from[t] - actual[t])}, extra {sorted(actual[t] - diff_from[t])}")
    return "; ".join(lines)


def upgrade(url: str) -> UpgradeReport:
    """Bring the database at `url` to the head revision (see the module docstring)."""
    cfg = alembic_config(url)
    if url.startswith("sqlite:///"):
        private_file(Path(url.removeprefix("sqlite:///")))
    engine = create_engine(driver_url(url), poolclass=NullPool)
    try:
        current = _current_revision(engine)
        report = UpgradeReport(before=current)
        snapshots = revision_schemas(cfg)
        known = set().union(*(s for _, s in snapshots)) if snapshots else set()
        actual = _schema(engine, known)
        order = [rev for rev, _ in snapshots]
        by_rev = dict(snapshots)
        if actual and (current is None or by_rev.get(current) != actual):
            later = order if current is None or current not in order else order[order.index(current) + 1:]
            match = next((rev for rev in reversed(later) if by_rev[rev] == actual), None)
            if match is not None:
                command.stamp(cfg, match)
                report.stamped = match
                report.notes.append(f"tables already existed (created by the app); stamped {match}")
            elif current is None:
                closest = min(snapshots, key=lambda s: len(_describe(s[1], actual)))
                raise SchemaMismatch(
                    "the database has SignBridge tables but no alembic_version, and they match no migration "
                    f"revision (closest {closest[0]}: {_describe(closest[1], actual)}). Fix the schema by hand, "
                    "then `alembic stamp <revision>`.")
        command.upgrade(cfg, "head")
        report.after = _current_revision(engine)
        return report
    finally:
        engine.dispose()
