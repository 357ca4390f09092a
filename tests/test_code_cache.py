"""The workflow sandbox's per-run import of a workflow module compiles it once per process
(`signbridge.core.code_cache`), without sharing anything but immutable code between runs."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from signbridge.core import code_cache
from worker import WORKFLOW_PACKAGES

SOURCE = '''
counter = []

def bump():
    counter.append(1)
    return len(counter)
'''


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package of its own on sys.path, with no bytecode written (as under PYTHONDONTWRITEBYTECODE)."""
    name = f"cc_pkg_{tmp_path.name.replace('-', '_')}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "flow.py").write_text(SOURCE)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    finders = list(sys.meta_path)
    yield name
    sys.meta_path[:] = finders
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def _fresh_import(name: str):  # type: ignore[no-untyped-def]
    """What the sandbox does for each run: import the module into an empty module table."""
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]
    importlib.invalidate_caches()
    return importlib.import_module(f"{name}.flow")


def test_each_fresh_import_reuses_the_compiled_code_but_not_the_module(package: str) -> None:
    code_cache.install([package])
    before = code_cache.cached_sources()
    first = _fresh_import(package)
    second = _fresh_import(package)
    assert isinstance(first.__spec__.loader, code_cache.CachingSourceLoader)
    assert code_cache.cached_sources() == before + 2  # the package's __init__ and flow.py, once each
    # one compilation: both modules run the very same code object ...
    assert first.bump.__code__ is second.bump.__code__
    # ... but each import ran the module body again: its state is its own.
    assert first is not second and first.counter is not second.counter
    assert first.bump() == 1 and first.bump() == 2 and second.bump() == 1


def test_without_the_cache_every_fresh_import_compiles_again(package: str) -> None:
    first = _fresh_import(package)
    second = _fresh_import(package)
    assert not isinstance(first.__spec__.loader, code_cache.CachingSourceLoader)
    assert first.bump.__code__ is not second.bump.__code__


def test_an_edited_source_is_compiled_again(package: str, tmp_path: Path) -> None:
    code_cache.install([package])
    first = _fresh_import(package)
    (tmp_path / package / "flow.py").write_text(SOURCE + "\ndef extra():\n    return 7\n")
    second = _fresh_import(package)
    assert not hasattr(first, "extra") and second.extra() == 7
    assert first.bump.__code__ is not second.bump.__code__


def test_install_is_idempotent(package: str) -> None:
    code_cache.install([package])
    code_cache.install([package])
    assert sum(1 for f in sys.meta_path if isinstance(f, code_cache._Finder) and package in f.packages) == 1


def test_the_workers_workflow_modules_load_through_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `build_worker` installs covers the module the sandbox imports for every SigningWorkflow."""
    finders = list(sys.meta_path)
    kept = {m: sys.modules[m] for m in list(sys.modules) if m == "workflows" or m.startswith("workflows.")}
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    try:
        code_cache.install(WORKFLOW_PACKAGES)
        for m in kept:
            del sys.modules[m]
        fresh = importlib.import_module("workflows.signing")
        assert isinstance(fresh.__spec__.loader, code_cache.CachingSourceLoader)
    finally:
        sys.meta_path[:] = finders
        for m in [m for m in sys.modules if m == "workflows" or m.startswith("workflows.")]:
            del sys.modules[m]
        sys.modules.update(kept)
