"""SQLite connections commit without an fsync by default (`PRAGMA synchronous=NORMAL` in WAL
mode); `SIGNBRIDGE_SQLITE_SYNCHRONOUS=FULL` restores a flush per commit."""

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


def test_by_default_commits_are_not_flushed_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SYNCHRONOUS_VARIABLE, raising=False)
    assert _pragmas(f"sqlite:///{tmp_path / 'a.db'}") == ("wal", NORMAL)
    assert Settings().sqlite_synchronous == "NORMAL"


def test_full_flushes_every_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SYNCHRONOUS_VARIABLE, "full")
    assert _pragmas(f"sqlite:///{tmp_path / 'b.db'}") == ("wal", FULL)


def test_anything_else_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SYNCHRONOUS_VARIABLE, "OFF")
    with pytest.raises(ValueError, match="NORMAL or FULL"):
        get_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(ValidationError):
        Settings()
