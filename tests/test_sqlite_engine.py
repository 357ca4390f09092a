"""A development stack's SQLite commits without an fsync each (`PRAGMA synchronous=NORMAL` in WAL
mode); anywhere else, and with `SIGNBRIDGE_SQLITE_SYNCHRONOUS=FULL`, every commit is flushed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from signbridge.core.settings import Settings
from store.db import SYNCHRONOUS_VARIABLE, get_engine

# SQLite's numbers for PRAGMA synchronous
NORMAL, FULL = 1, 2


def _pragmas(url: str) -> tuple[str, int]:
    with get_engine(url).connect() as conn:
        return (conn.execute(text("PRAGMA journal_mode")).scalar_one(),
                conn.execute(text("PRAGMA synchronous")).scalar_one())


def test_in_development_commits_are_not_flushed_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SYNCHRONOUS_VARIABLE, raising=False)
    monkeypatch.setenv("SIGNBRIDGE_ENVIRONMENT", "development")
    assert _pragmas(f"sqlite:///{tmp_path / 'a.db'}") == ("wal", NORMAL)


def test_in_production_every_commit_is_flushed_unless_told_otherwise(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SYNCHRONOUS_VARIABLE, raising=False)
    monkeypatch.setenv("SIGNBRIDGE_ENVIRONMENT", "production")
    assert _pragmas(f"sqlite:///{tmp_path / 'p.db'}") == ("wal", FULL)
    monkeypatch.setenv(SYNCHRONOUS_VARIABLE, "normal")
    assert _pragmas(f"sqlite:///{tmp_path / 'q.db'}") == ("wal", NORMAL)


def test_full_flushes_every_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SYNCHRONOUS_VARIABLE, "full")
    assert _pragmas(f"sqlite:///{tmp_path / 'b.db'}") == ("wal", FULL)


def test_anything_else_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SYNCHRONOUS_VARIABLE, "OFF")
    with pytest.raises(ValueError, match="NORMAL or FULL"):
        get_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(ValidationError):
        Settings()
