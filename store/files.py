"""Files SignBridge creates hold contracts, signatures and keys: owner-only, 0700 directories and
0600 files, whatever the process's umask (the `signbridge` command also sets 077 for everything
else it and its children create)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """`path` and any missing parents created 0700; directories that exist keep their mode."""
    for missing in reversed([p for p in (path, *path.parents) if not p.exists()]):
        with contextlib.suppress(FileExistsError):  # created by a concurrent process meanwhile
            missing.mkdir(mode=PRIVATE_DIR)
            os.chmod(missing, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
    return path


def private_file(path: Path) -> Path:
    """`path` created empty and 0600 unless it exists (then it keeps its mode); its directory private."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE))
    return path


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_path` (created private): one process at a time, across
    processes on this machine (several API processes starting together)."""
    import fcntl

    with private_file(lock_path).open("rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
