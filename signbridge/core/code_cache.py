"""Compile the workflow modules once per process, not once per workflow run.

Temporal's workflow sandbox imports a workflow's module afresh for every workflow it starts
running (a new flow, or one evicted from the sticky cache and replayed), so that no state leaks
between runs. Python normally makes that import cheap with the bytecode in `__pycache__`; with
`PYTHONDONTWRITEBYTECODE` set (our Dockerfile sets it, and so do many CI and development
machines) there is none, and every such import compiled `workflows/signing.py` from source again:
about 16 ms of the worker's CPU per flow, holding the GIL. `install` keeps the code objects in
memory instead. Code objects are immutable, so sharing them keeps each run's module, functions
and globals its own; the sandbox still executes the module body per run. The cache is keyed by
the source's path and SHA-256, so an edited file is compiled again.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Iterable, Sequence
from types import CodeType, ModuleType
from typing import Any

_CODE: dict[tuple[str, bytes], CodeType] = {}
_LOCK = threading.Lock()


class CachingSourceLoader(importlib.machinery.SourceFileLoader):
    """A `SourceFileLoader` whose compiled code is reused for identical source (see the module)."""

    def source_to_code(self, data: Any, path: Any, *, _optimize: int = -1) -> CodeType:  # type: ignore[override]
        key = (str(path), hashlib.sha256(data if isinstance(data, bytes) else bytes(data)).digest())
        with _LOCK:
            code = _CODE.get(key)
        if code is None:
            code = super().source_to_code(data, path, _optimize=_optimize)  # type: ignore[call-arg]
            with _LOCK:
                _CODE[key] = code
        return code


class _Finder(importlib.abc.MetaPathFinder):
    """Finds modules of the given top-level packages as usual, and loads them through the cache."""

    def __init__(self, packages: frozenset[str]) -> None:
        self.packages = packages

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in self.packages:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader:
            return spec  # not found on sys.path, or not plain source: the usual finders decide
        spec.loader = CachingSourceLoader(spec.loader.name, spec.loader.path)
        return spec


def install(packages: Iterable[str]) -> None:
    """Load the modules of `packages` (top-level names) through the code cache from now on.
    Idempotent: one finder per package set, first on `sys.meta_path`."""
    wanted = frozenset(packages)
    if any(isinstance(f, _Finder) and f.packages == wanted for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder(wanted))


def cached_sources() -> int:
    """How many distinct sources have been compiled through the cache (for tests and metrics)."""
    with _LOCK:
        return len(_CODE)
