"""Which blob store this process uses: S3 when `SIGNBRIDGE_S3_BUCKET` is set, else the local disk.

One function so the API, the worker and the tests cannot disagree about where a document lives:
a worker writing to its disk while the API reads from S3 would lose every signed file.
"""

from __future__ import annotations

from signbridge.core.settings import Settings
from store.blobs import BlobStore, FileBlobStore
from store.s3_blobs import S3BlobStore, S3Settings


def make_blob_store(settings: Settings, s3: S3Settings | None = None) -> BlobStore:
    """S3 if a bucket is configured (from `s3`, else from the environment), else `<data_dir>/blobs`."""
    s3 = s3 if s3 is not None else S3Settings()
    if s3.bucket:
        return S3BlobStore.from_settings(s3)
    return FileBlobStore(settings.data_dir / "blobs")
