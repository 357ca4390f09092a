"""`S3BlobStore` against a real S3 API: moto in server mode on a loopback port (no internet).

The same behaviours as the `FileBlobStore` tests in test_store.py, plus what S3 is for: two
processes on different machines (two stores, two clients) see one another's blobs.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from signbridge.core.settings import Settings
from store.blob_factory import make_blob_store
from store.blobs import BlobNotFound, FileBlobStore
from store.s3_blobs import S3BlobStore, S3Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(endpoint: str) -> S3Settings:
    """A fresh bucket per test, configured exactly as an operator would through the environment."""
    conf = S3Settings(bucket=f"sb-{uuid.uuid4().hex[:12]}", endpoint_url=endpoint, region="us-east-1",
                      access_key_id="testing", secret_access_key="testing", prefix="signbridge/blobs")  # type: ignore[arg-type]
    conf.client().create_bucket(Bucket=conf.bucket)
    return conf


def test_blobs_are_content_addressed(s3: S3Settings) -> None:
    blobs = S3BlobStore.from_settings(s3)
    key = blobs.put(b"%PDF-1.7 hello")
    assert len(key) == 64
    assert blobs.put(b"%PDF-1.7 hello") == key  # idempotent
    assert blobs.get(key) == b"%PDF-1.7 hello"
    assert blobs.exists(key)
    assert not blobs.exists("0" * 64)
    with pytest.raises(BlobNotFound):
        blobs.get("0" * 64)
    with pytest.raises(BlobNotFound):
        blobs.get("../../etc/passwd")
    assert not blobs.exists("../../etc/passwd")
    # Stored where the layout says, under the configured prefix, exactly once.
    listed = s3.client().list_objects_v2(Bucket=s3.bucket)["Contents"]
    assert [o["Key"] for o in listed] == [f"signbridge/blobs/{key[:2]}/{key[2:4]}/{key}"]


def test_second_put_does_not_rewrite_the_object(s3: S3Settings) -> None:
    blobs = S3BlobStore.from_settings(s3)
    key = blobs.put(b"contract v1")
    first = s3.client().head_object(Bucket=s3.bucket, Key=blobs.object_key(key))
    blobs.put(b"contract v1")
    second = s3.client().head_object(Bucket=s3.bucket, Key=blobs.object_key(key))
    assert first["LastModified"] == second["LastModified"] and first["ETag"] == second["ETag"]
    assert second["Metadata"] == {"sha256": key}


def test_corrupted_blob_is_refused(s3: S3Settings) -> None:
    blobs = S3BlobStore.from_settings(s3)
    key = blobs.put(b"original")
    s3.client().put_object(Bucket=s3.bucket, Key=blobs.object_key(key), Body=b"tampered")
    with pytest.raises(BlobNotFound, match="corrupt"):
        blobs.get(key)


def test_two_machines_share_blobs(s3: S3Settings) -> None:
    """The API on one host stores the upload; a worker on another reads it by key."""
    api_side = S3BlobStore.from_settings(s3)
    worker_side = S3BlobStore(s3.client(), s3.bucket, s3.prefix)
    key = api_side.put(b"%PDF-1.7 uploaded through the API")
    assert worker_side.exists(key)
    assert worker_side.get(key) == b"%PDF-1.7 uploaded through the API"
    # Another prefix is another store: nothing leaks between deployments sharing a bucket.
    other = S3BlobStore(s3.client(), s3.bucket, "staging/")
    assert not other.exists(key)


def test_factory_picks_s3_when_a_bucket_is_configured(s3: S3Settings, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path)
    assert isinstance(make_blob_store(settings, S3Settings(bucket="")), FileBlobStore)
    for name, value in {"BUCKET": s3.bucket, "ENDPOINT_URL": s3.endpoint_url, "REGION": s3.region,
                        "ACCESS_KEY_ID": "testing", "SECRET_ACCESS_KEY": "s3-secret-value", "PREFIX": "/x/"}.items():
        monkeypatch.setenv(f"SIGNBRIDGE_S3_{name}", value)
    store = make_blob_store(settings)
    assert isinstance(store, S3BlobStore) and store.prefix == "x/" and store.bucket == s3.bucket
    assert "s3-secret-value" not in repr(S3Settings())  # the secret never shows in reprs or logs
    key = store.put(b"via the factory")
    assert S3BlobStore(s3.client(), s3.bucket, "x/").get(key) == b"via the factory"
    monkeypatch.delenv("SIGNBRIDGE_S3_BUCKET")
    local = make_blob_store(settings)
    assert isinstance(local, FileBlobStore) and local.root == tmp_path / "blobs"
