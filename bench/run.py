"""`python -m bench.run [--quick] [--out docs/benchmarks.md]`: every row, then the report.

Starts everything it talks to on loopback (Temporal dev server and time-skipping server from the
pip-installed binaries, the API and worker processes, a chat sink) and stops it all at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import ack, card, cost, e2e, scale, signing, waiting
from bench.common import Stack, TimedSink, api_process, make_settings, target, worker_process
from bench.report import Results, machine, save_results, write_report
from signbridge.core.settings import Settings
from tests.sim.servers import free_port
from tests.temporal_servers import dev_server

RESULTS = Path(".data/bench/results.pickle")


def _log(msg: str) -> None:
    print(msg, flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="seconds instead of minutes: for CI and debugging")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write the report (default: docs/benchmarks.md; with --quick: not written)")
    p.add_argument("--ack-seconds", type=float, default=None, help="duration of each callback rate (default 30)")
    p.add_argument("--rates", default="25,50,100", help="callback rates per second, comma separated")
    p.add_argument("--e2e-flows", type=int, default=None, help="flows in the throughput row (default 30)")
    p.add_argument("--scale-flows", type=int, default=None,
                   help="flows per configuration in the scale-out row, 1+1 and 2+2 processes (default 40)")
    p.add_argument("--card-samples", type=int, default=None, help="samples in the signal-to-card row (default 30)")
    p.add_argument("--waiting-flows", type=int, default=None,
                   help="flows waiting at once in the scale row (default 300; the issue asks 10,000)")
    p.add_argument("--capped-cache", type=int, default=None,
                   help="also measure row 4's RSS with the worker's sticky cache capped at this many flows "
                        "(default 60; 0 to skip)")
    p.add_argument("--sign-iterations", type=int, default=None, help="signatures per key type (default 10)")
    p.add_argument("--api-processes", type=int, default=None,
                   help="row 1's second API: this many processes (default: cores, as SIGNBRIDGE_API_PROCESSES)")
    p.add_argument("--rows", default="1,2,3,4,5,6,7", help="which rows to run, comma separated")
    p.add_argument("--results", type=Path, default=RESULTS,
                   help=f"where the raw results are saved after every row (default {RESULTS}); "
                        "`python -m bench.report` renders them again")
    return p.parse_args(argv)


async def main(args: argparse.Namespace, command: str = "python -m bench.run") -> Results:
    q = args.quick
    rows = {int(r) for r in args.rows.split(",") if r.strip()}
    res = Results(quick=q, started=time.time(), machine=machine(), command=command)

    def save() -> None:
        """After every row, so a late failure (row 4 runs for an hour at 10,000) keeps the others."""
        save_results(res, args.results)

    res.params = {
        "ack_seconds": args.ack_seconds if args.ack_seconds is not None else (2.0 if q else 30.0),
        "rates": [float(r) for r in args.rates.split(",")],
        "e2e_flows": args.e2e_flows or (4 if q else 30),
        "card_samples": args.card_samples or (3 if q else 30),
        "scale_flows": args.scale_flows or (4 if q else 40),
        "waiting_flows": args.waiting_flows or (20 if q else 300),
        "sign_iterations": args.sign_iterations or (2 if q else 10),
        "capped_cache": args.capped_cache if args.capped_cache is not None else (5 if q else 60),
        "api_processes": args.api_processes or os.cpu_count() or 1,
    }
    p = res.params
    with tempfile.TemporaryDirectory(prefix="signbridge-bench-") as tmp:
        root = Path(tmp)
        if 6 in rows:
            _log("row 6: PAdES signing and validation by key type")
            res.signing = await asyncio.to_thread(signing.run, p["sign_iterations"], _log)
            save()
        if 3 in rows:
            _log("row 3: cost per flow (time-skipping server)")
            res.costs = await cost.run(root / "cost", quick=q, log=_log)
            save()
        if rows & {1, 2, 4, 5}:
            await _dev_rows(res, rows, root, _log, save)
        if 7 in rows:
            _log(f"row 7: scale-out, {p['scale_flows']} flows on 1 worker + 1 API, then on 2 + 2 (own dev server)")
            res.scale = await scale.run(root / "scale", p["scale_flows"], warmup_per_api=0 if q else 2, log=_log)
            save()
    res.finished = time.time()
    save()
    return res


async def _dev_rows(res: Results, rows: set[int], root: Path, log: Any, save: Callable[[], None]) -> None:
    p = res.params
    async with dev_server() as env:
        client = env.client
        with TimedSink(_secret()) as sink:
            main_settings = make_settings(root / "main", target(env), sink.url)
            ack_settings = make_settings(root / "ack", target(env), sink.url,
                                         task_queue=f"bench-noworker-{uuid.uuid4().hex[:6]}")
            main, acks = Stack(main_settings, root / "main"), Stack(ack_settings, root / "ack")
            with api_process(main) as api, api_process(acks) as ack_api, \
                    worker_process(main) as worker, worker_process(main, "bench.baseline") as base_worker:
                if 1 in rows:
                    log(f"row 1: callback acknowledgement (open loop), 1 and {p['api_processes']} API processes")
                    with _ack_apis(root, ack_settings, ack_api, p["api_processes"]) as apis:
                        res.ack = await ack.run(client, apis, ack_settings.task_queue + "-empty", p["rates"],
                                                p["ack_seconds"], log)
                    save()
                if 5 in rows:
                    log("row 5: signal to card")
                    res.card = await card.run(client, main_settings, sink, p["card_samples"], log)
                    save()
                if 2 in rows:
                    log("row 2: end-to-end throughput")
                    res.e2e = await e2e.run(client, main_settings, sink, api, p["e2e_flows"], log)
                    save()
                if 4 in rows:
                    log(f"row 4: {p['waiting_flows']} flows waiting at once")
                    n = p["waiting_flows"]
                    # Above ~1,000 flows an open loop faster than this 2-core box opens flows (~10/s)
                    # only queues thousands of starts in the dev server, which then times out writes.
                    rate = 50.0 if res.quick else (100.0 if n <= 1000 else 10.0)
                    p["start_rates"] = [rate, rate * 2 if n <= 1000 else 100.0]
                    res.waiting = await waiting.run_signbridge(
                        client, main_settings, sink, api, ack_api, worker, n, rate,
                        ack_seconds=2.0 if res.quick else 10.0, log=log)
                    save()
                    res.waiting_base = await waiting.run_baseline(client, main_settings, sink, base_worker, n,
                                                                  p["start_rates"][1], log=log)
                    save()
                    if p["capped_cache"]:
                        capped_settings = main_settings.model_copy(
                            update={"task_queue": main_settings.task_queue + "-capped"})
                        capped = Stack(capped_settings, root / "main")
                        with worker_process(capped, "bench.capped_worker", [str(p["capped_cache"])]) as cw:
                            res.waiting_capped = await waiting.run_capped(
                                client, capped_settings, sink, cw, p["capped_cache"], n, rate, log=log)


@contextmanager
def _ack_apis(root: Path, settings: Settings, one: str, processes: int) -> Iterator[dict[int, str]]:
    """Row 1's APIs by process count: the one-process API, and (for row 1 only, so it idles through
    no other row) N processes on the same queue, as `signbridge api` starts them by default."""
    if processes <= 1:
        yield {1: one}
        return
    many = Stack(settings.model_copy(update={"public_url": f"http://127.0.0.1:{free_port()}"}), root / "ack-n")
    with api_process(many, processes) as url:
        yield {1: one, processes: url}


def _secret() -> str:
    from bench.common import SECRET

    return SECRET


def _command(argv: list[str]) -> str:
    """The command line that shaped the numbers (where the report was written does not)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            kept.append(arg)
    return " ".join(["python -m bench.run", *kept])


def cli(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t = time.monotonic()
    res = asyncio.run(main(args, _command(sys.argv[1:] if argv is None else argv)))
    out = args.out if args.out is not None else (None if args.quick else Path("docs/benchmarks.md"))
    text = write_report(res)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        _log(f"wrote {out} ({time.monotonic() - t:.0f} s)")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
