"""The blob store and the tamper-evident audit trail, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session

from store import audit
from store.blobs import BlobNotFound, FileBlobStore, sha256_hex
from store.db import create_all, get_engine


def test_blobs_are_content_addressed(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    key = blobs.put(b"%PDF-1.7 hello")
    assert key == sha256_hex(b"%PDF-1.7 hello")
    assert blobs.put(b"%PDF-1.7 hello") == key  # idempotent
    assert blobs.get(key) == b"%PDF-1.7 hello"
    assert not blobs.exists("0" * 64)
    with pytest.raises(BlobNotFound):
        blobs.get("0" * 64)
    with pytest.raises(BlobNotFound):
        blobs.get("../../etc/passwd")


def test_corrupted_blob_is_refused(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    key = blobs.put(b"original")
    next(tmp_path.rglob(key)).write_bytes(b"tampered")
    with pytest.raises(BlobNotFound):
        blobs.get(key)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_audit_chain_detects_tampering(db_url: str) -> None:
    engine = get_engine(db_url)
    create_all(engine)
    with Session(engine, expire_on_commit=False) as s:
        for i in range(4):
            audit.append(s, request_id="r1", key=f"k{i}", action="test", actor="u", detail={"i": i, "名": "张三"})
        audit.append(s, request_id="r2", key="k0", action="other", actor="u")
        # the same key again is the same event (an activity retry), not a second row
        audit.append(s, request_id="r1", key="k1", action="test", actor="u", detail={"i": 1})
        rows = audit.trail(s, "r1")
        assert [r.seq for r in rows] == [1, 2, 3, 4]
        assert audit.verify_chain(rows)
        assert rows[0].prev_hash == audit.GENESIS and rows[1].prev_hash == rows[0].hash

        rows[2].detail = rows[2].detail.replace('"i":2', '"i":9')
        s.add(rows[2])
        s.commit()
        assert not audit.verify_chain(audit.trail(s, "r1"))

    with Session(engine) as s:
        rows = audit.trail(s, "r2")
        assert audit.verify_chain(rows)
        assert not audit.verify_chain(rows + rows)  # reordered / duplicated rows break the chain


def test_a_retried_append_returns_the_recorded_event_and_adds_nothing(db_url: str) -> None:
    """A retry reaches the insert and is refused by the (request_id, key) constraint: it gets the
    event as first recorded, the chain gains no row, and appends after it chain on."""
    engine = get_engine(db_url)
    create_all(engine)
    first = [audit.record(engine, request_id="retry", key=f"k{i}", action="test", actor="u", detail={"i": i})
             for i in range(3)]
    audit.record(engine, request_id="other", key="k1", action="test", actor="u")  # same key, another request
    again = audit.record(engine, request_id="retry", key="k1", action="changed", actor="v", detail={"x": 1})
    assert (again.seq, again.action, again.hash) == (first[1].seq, "test", first[1].hash)
    after = audit.record(engine, request_id="retry", key="k3", action="test", actor="u")
    rows = audit.trail_of(engine, "retry")
    assert [r.key for r in rows] == ["k0", "k1", "k2", "k3"] and after.seq == 4
    assert after.prev_hash == first[2].hash and audit.verify_chain(rows)
