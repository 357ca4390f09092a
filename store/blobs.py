"""Content-addressed blob storage: a file's key is its SHA-256, so storing twice is a no-op."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from store.files import private_dir


class BlobNotFound(KeyError):
    pass


class BlobStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store the bytes and return their key (the hex SHA-256)."""

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileBlobStore:
    """Blobs under `root/ab/cd/<sha256>`; written to a temp file and renamed, so readers never see half a file."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise BlobNotFound(key)
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        key = sha256_hex(data)
        path = self._path(key)
        if path.exists():
            return key
        private_dir(path.parent)  # mkstemp makes the file itself 0600
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError as e:
            raise BlobNotFound(key) from e
        if sha256_hex(data) != key:
            raise BlobNotFound(f"{key} is corrupt on disk")
        return data

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).exists()
        except BlobNotFound:
            return False
