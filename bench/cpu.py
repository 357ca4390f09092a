"""`python -m bench.cpu [--flows 30] [--rounds 2]`: CPU seconds per end-to-end flow, by process.

Row 2 reports flows per second, which on a shared 2-core machine moves with whatever else runs.
The CPU each process spends per flow moves much less, and says where a flow's cost is: the API
(signing pages, PAdES signatures), the worker (activities, workflow tasks), the Temporal dev
server and the bench process itself (load generator and chat sink). Same stack and driver as
row 2 (`bench.e2e.run_signbridge`); the first round warms the processes up (imports, caches)
and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench import e2e
from bench.common import SECRET, Stack, TimedSink, api_process, make_settings, target, worker_process
from bench.scale import api_pids, dev_server_pids, self_cpu_seconds, tree_cpu_seconds
from tests.temporal_servers import dev_server


async def run(flows: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="signbridge-cpu-") as tmp:
        root = Path(tmp)
        async with dev_server() as env:
            address = target(env)
            server = next(iter(dev_server_pids()), None)
            with TimedSink(SECRET) as sink:
                settings = make_settings(root / "main", address, sink.url)
                stack = Stack(settings, root / "main")
                with api_process(stack) as api, worker_process(stack) as worker, \
                        worker_process(stack, "bench.baseline") as base_worker:
                    pids = {"api": api_pids([api])[0], "worker": worker.pid, "bench": os.getpid(),
                            **({"temporal": server} if server else {})}
                    for r in range(rounds + 1):
                        before = {k: _cpu(p) for k, p in pids.items()}
                        t0 = time.monotonic()
                        res = await e2e.run_signbridge(env.client, settings, sink, api, flows)
                        wall = time.monotonic() - t0
                        used = {k: _cpu(p) - before[k] for k, p in pids.items()}
                        label = "warm-up" if r == 0 else f"round {r}"
                        per = "  ".join(f"{k} {1000 * v / flows:.0f}" for k, v in used.items())
                        print(f"{label}: {res.completed}/{flows} in {wall:.1f} s ({res.per_second:.2f} flows/s); "
                              f"CPU ms per flow: {per}; total {1000 * sum(used.values()) / flows:.0f}", flush=True)
                    # The same measurement for row 2's baseline (no-op activities, same signals).
                    base = {"worker": base_worker.pid, "bench": os.getpid(), **({"temporal": server} if server else {})}
                    before = {k: _cpu(p) for k, p in base.items()}
                    t0 = time.monotonic()
                    bres = await e2e.run_baseline(env.client, settings, sink, flows)
                    wall = time.monotonic() - t0
                    used = {k: _cpu(p) - before[k] for k, p in base.items()}
                    per = "  ".join(f"{k} {1000 * v / flows:.0f}" for k, v in used.items())
                    print(f"baseline: {bres.completed}/{flows} in {wall:.1f} s ({bres.per_second:.2f} flows/s); "
                          f"CPU ms per flow: {per}; total {1000 * sum(used.values()) / flows:.0f}", flush=True)


def _cpu(pid: int) -> float:
    """A SignBridge process with its signing pool; the bench process alone (its tree is everything)."""
    return self_cpu_seconds() if pid == os.getpid() else tree_cpu_seconds(pid)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__)
    p.add_argument("--flows", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    asyncio.run(run(args.flows, args.rounds))


if __name__ == "__main__":
    main()
