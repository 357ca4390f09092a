"""The cost-per-flow bench row in quick mode: history must not grow with waiting time.

Runs `bench.cost` on the time-skipping server (a week passes in milliseconds): a two-signer flow
signed at once, and the same flow whose last signer waits seven days. The week may add the
reminders it sends (EVENTS_PER_REMINDER history events each) and nothing else — a flow that
wrote events while merely waiting would make a company's Temporal bill grow with how slowly
people sign. Provider events arrive by webhook here (polling off, as in the test harness); the
row with every shipped default (`poll_after` 1 h included) waits 30 days and must not poll at all:
the built-in provider's events arrive durably (signing page, then the worker's relay).
"""

from __future__ import annotations

from pathlib import Path

from bench import cost
from bench.report import Results, load_results, save_results, write_report


async def test_cost_row_quick_waiting_adds_only_reminders(tmp_path: Path) -> None:
    costs = await cost.run(tmp_path, quick=True, log=lambda _msg: None)
    by_name = {c.name: c for c in costs}
    for c in costs:
        assert c.status == "COMPLETED", c
        assert c.events > 0 and c.baseline_events and c.baseline_events > 0
        assert c.actions["starts"] == 1 and c.actions["signals"] == 2 and c.actions["activities"] >= 2

    plain = by_name["2 serial, no reminders"]
    assert plain.reminders == 0 and plain.polls == 0
    at_once = by_name["2 serial, reminders on, signed at once"]
    week = by_name["2 serial, reminders on, last signs after 7 days"]
    assert at_once.reminders == 0
    assert week.reminders == 3  # 24 h, 48 h, 72 h — then no more (reminder_max)
    assert week.polls == 0
    assert week.events - at_once.events <= week.reminders * cost.EVENTS_PER_REMINDER, (week, at_once)
    month = by_name[cost.THIRTY_DAYS]
    assert month.reminders == 3 and month.polls == 0
    assert month.events <= cost.WAIT_TARGET * (at_once.events + month.reminders * cost.EVENTS_PER_REMINDER)


async def test_saved_results_render_the_same_report(tmp_path: Path) -> None:
    """`python -m bench.report` renders a run again from what `bench.run` saved after each row."""
    costs = await cost.run(tmp_path / "cost", quick=True, log=lambda _msg: None)
    res = Results(quick=True, started=0.0, machine={"CPU": "test"}, costs=costs,
                  command="python -m bench.run --quick --rows 3")
    save_results(res, tmp_path / "results.pickle")
    again = load_results(tmp_path / "results.pickle")
    text = write_report(again)
    assert text == write_report(res)
    plain = next(c for c in costs if c.name == "2 serial, no reminders")
    assert f"| 2 serial, no reminders | COMPLETED | {plain.events} / " in text
    assert "`python -m bench.run --quick --rows 3`" in text
    assert "**Waiting 30 days with the shipped defaults**" in text and "— **met**" in text


def test_a_full_scale_run_supplies_row_4_at_10000_and_the_rss_verdict() -> None:
    """The RSS target is judged on the full-scale run when one is attached, not on extrapolation."""
    from bench.waiting import WaitResult

    def waited(n: int, rss: float, peak: float) -> WaitResult:
        return WaitResult(n=n, setup_seconds=n / 9, rss_mb=rss, peak_rss_mb=peak, idle_rss_mb=180, ack=None,
                          complete_seconds=n / 5, completed=n, warm_rss_mb=rss - 20, warm_n=n // 2)

    main = Results(quick=False, started=0.0, machine={}, waiting=waited(300, 240, 250),
                   waiting_base=waited(300, 120, 125))
    assert "met by extrapolation, not measured at 10,000" in write_report(main)
    main.full_scale = Results(quick=False, started=0.0, machine={}, command="python -m bench.run --rows 4",
                              waiting=waited(10_000, 900, 1100), waiting_base=waited(10_000, 300, 310))
    text = write_report(main)
    assert "### At 10,000 flows" in text and "`python -m bench.run --rows 4`" in text
    target = next(line for line in text.splitlines() if line.startswith("| 10,000 waiting flows"))
    assert "900 MiB with 10000 waiting" in target and "**missed**" in target  # the 1,100 MiB high-water mark


def test_row_1_reports_one_and_n_api_processes_against_the_same_bare_start() -> None:
    """Row 1's verdicts are judged on N API processes (the shipped default), with one process beside
    it, each against the bare start measured at that rate; results saved before N existed still render."""
    from bench.ack import AckRow
    from bench.common import LoadResult

    def load(rate: float, p50_ms: float, p99_ms: float) -> LoadResult:
        lat = [p50_ms / 1000] * 98 + [p99_ms / 1000] * 2
        return LoadResult(rate=rate, duration=30, latencies=lat, errors=0)

    rows = []
    for rate, base, one, many in ((50, 20.0, 45.0, 22.0), (100, 30.0, 400.0, 90.0)):
        rows += [AckRow(rate, load(rate, 12, one), load(rate, 6, base), 1),
                 AckRow(rate, load(rate, 10, many), load(rate, 6, base), 2)]
    text = write_report(Results(quick=False, started=0.0, machine={}, ack=rows, params={"ack_seconds": 30}))
    fifty = next(line for line in text.splitlines() if line.startswith("| callback p99 ≤ 1.2 × bare start"))
    assert "22.0 ms vs 20.0 ms (1.10×) with 2 API processes" in fifty and "1 API process: 45.0 ms" in fifty
    assert fifty.endswith("| met |")
    hundred = next(line for line in text.splitlines() if line.startswith("| callback p99 ≤ 100 ms at 100 req/s"))
    assert "90.0 ms with 2 API processes" in hundred and hundred.endswith("| met |")
    assert "| 100 | 1 | 12.0 / 400.0 | 6.0 / 30.0 |" in text and "| 100 | 2 | 10.0 / 90.0 | 6.0 / 30.0 |" in text
    assert "At 100 req/s" not in text  # nothing missed, nothing to explain

    old = AckRow.__new__(AckRow)  # as unpickled from a run before `processes` existed
    old.__dict__.update(rate=50.0, signbridge=load(50, 12, 80.0), baseline=load(50, 6, 20.0))
    text = write_report(Results(quick=False, started=0.0, machine={}, ack=[old], params={"ack_seconds": 30}))
    assert "80.0 ms vs 20.0 ms (4.00×) with 1 API process | **missed** |" in text
