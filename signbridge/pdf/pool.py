"""One process pool per OS process for PAdES signing and validation, on every core.

pyHanko is pure Python: a signature or a validation holds the GIL for tens of milliseconds, so
run in a thread of the API or the worker it blocks that process's event loop and uses one core
however many the machine has (docs/benchmarks.md, rows 2 and 6). Here the work goes to a pool of
child processes instead (`SIGNBRIDGE_SIGNING_PROCESSES`, default one per core; 0 keeps the old
thread, for tiny deployments and tests that want one process).

- The pool starts lazily, on the first job, with the forkserver start method (spawn where there
  is none): forking a threaded asyncio process copies locks held by other threads.
- Jobs are top-level functions (`signbridge.pdf.jobs`) whose arguments and results are bytes
  and plain data, so they pickle; the children keep their own caches (CA, signer certificates,
  the stamp font subset).
- A child that dies (out of memory, a segfault in a C extension) breaks the whole executor
  (`BrokenProcessPool`). The pool is then rebuilt and the job retried once; if that fails too,
  `SigningUnavailable` tells the caller to use its "try again later" path (the signing page's
  503, the activity's retry) instead of failing every later signature.
- `shutdown_pool()` at API / worker shutdown stops the children. An owner that dies without it
  (SIGKILL, the OOM killer) would leave them waiting for jobs for ever — the forkserver too,
  since the children hold its pipe — so each child watches its owner and exits when it is gone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# Imported once by the forkserver, so each child starts with pyHanko and the jobs loaded.
PRELOAD = ["signbridge.pdf.jobs"]


class SigningUnavailable(RuntimeError):
    """The signing processes keep dying: the caller reports "temporarily unavailable"."""


def default_processes() -> int:
    """One child per core the process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _preload() -> list[str]:
    """What the forkserver imports once for all children: the jobs, and the program's main module.

    Every child re-runs the main module (as `__mp_main__`) before its first job; when the
    forkserver has imported what it imports, that costs nothing, instead of seconds of CPU per
    child (the worker's main module imports Temporal and every activity) just when a burst of
    signatures starts the children."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    by_name = [spec.name] if spec is not None and spec.name and not spec.name.endswith("__main__") else []
    return ["__main__", *PRELOAD, *by_name]


# How often a child checks that the process it signs for is still there.
OWNER_CHECK_SECONDS = 2.0


def _started(pid: int) -> str | None:
    """The process's start time (Linux /proc), so a recycled pid is not taken for the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()[19]


def _owner_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _started(pid) == started


def _watch_owner(pid: int, started: str | None) -> None:
    """Pool initializer: exit once the owner is gone (see the module docstring)."""
    def watch() -> None:
        while _owner_alive(pid, started):
            threading.Event().wait(OWNER_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_preload())
        return ctx
    return multiprocessing.get_context("spawn")


class SigningPool:
    """Runs CPU-bound PDF jobs in `processes` child processes (0: in a thread of this process)."""

    def __init__(self, processes: int) -> None:
        if processes < 0:
            raise ValueError(f"signing processes must be 0 or more, got {processes}")
        self.processes = processes
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self.rebuilds = 0  # how many times a broken pool was replaced (for logs and tests)

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                owner = os.getpid()
                self._executor = ProcessPoolExecutor(max_workers=self.processes, mp_context=_context(),
                                                     initializer=_watch_owner, initargs=(owner, _started(owner)))
            return self._executor

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is broken:
                self._executor = None
                self.rebuilds += 1
        broken.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a child process; retried once on a fresh pool if a child died."""
        if self.processes == 0:
            return await asyncio.to_thread(fn, *args)
        job = functools.partial(fn, *args)
        name = getattr(fn, "__name__", repr(fn))
        for attempt in (1, 2):
            executor = self._current()
            try:
                # Submitting may start a child, which waits for the forkserver to fork it (the
                # first time: until it has imported pyHanko): seconds in which the event loop
                # would stop answering callbacks and heartbeats. So submit from a thread.
                future = await asyncio.to_thread(executor.submit, job)
            except BrokenProcessPool as e:  # broken by another job's dead child
                log.warning("signing pool broken before %s (attempt %d): starting a new pool: %r", name, attempt, e)
                self._replace(executor)
                continue
            except RuntimeError as e:  # `shutdown()` ran meanwhile (a lifespan ending): a new pool takes it
                if "shutdown" not in str(e):
                    raise
                log.info("signing pool shut down under %s: starting a new one", name)
                continue
            try:
                return await asyncio.wrap_future(future)
            except BrokenProcessPool as e:
                log.warning("signing process died during %s (attempt %d): starting a new pool: %r", name, attempt, e)
                self._replace(executor)
        raise SigningUnavailable(f"the signing processes died twice running {getattr(fn, '__name__', fn)}")

    def shutdown(self) -> None:
        """Stop the children (waits for running jobs); the next `run` starts a new pool."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


_POOL: SigningPool | None = None
_POOL_PID = 0
_POOL_LOCK = threading.Lock()


def signing_pool(processes: int | None = None) -> SigningPool:
    """This OS process's pool, made on first use with `processes` (None: one per core).

    Later calls return the same pool whatever they pass; a child of a fork gets its own.
    """
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            _POOL = SigningPool(default_processes() if processes is None else processes)
            _POOL_PID = os.getpid()
        return _POOL


async def run_job(processes: int | None, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on this process's pool (see `signing_pool`)."""
    return await signing_pool(processes).run(fn, *args)


async def shutdown_pool() -> None:
    """At API / worker shutdown: stop this process's signing children, if any were started."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = (_POOL, None) if _POOL_PID == os.getpid() else (None, _POOL)
    if pool is not None:
        await asyncio.to_thread(pool.shutdown)
