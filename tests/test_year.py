"""The simulated trading year (bench/year.py), shortened for CI: the spans with the DST changes,
Christmas's early close, and a window after midnight over Thanksgiving's, each with its own faults
(drawn for the span: the week-long outage falls inside it).

The whole year runs by hand: `python bench/year.py` (about two minutes here).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import year  # noqa: E402

SPANS = [
    # (start, end, window_start, lookback)
    (dt.date(2026, 3, 2), dt.date(2026, 3, 16), "17:00", 7),  # DST starts 2026-03-08: wall-time window
    (dt.date(2026, 10, 26), dt.date(2026, 11, 9), "close+60m", 7),  # DST ends 2026-11-01
    (dt.date(2026, 12, 14), dt.date(2026, 12, 29), "close+60m", 7),  # the 12-24 early close, Christmas
    (dt.date(2026, 11, 16), dt.date(2026, 12, 1), "close+9h", 1),  # the window after midnight; Thanksgiving's
    # holiday and the 11-27 early close (close+9h is 22:00 that day)
]


@pytest.mark.slow
@pytest.mark.parametrize("start,end,window,lookback", SPANS, ids=[f"{s}-{w}-lookback{n}" for s, _, w, n in SPANS])
def test_a_span_of_the_year_keeps_every_invariant(tmp_path, start, end, window, lookback):
    report = year.simulate(tmp_path, seed=2026, start=start, end=end, window=window, lookback=lookback)
    assert report.ticks == len(list(year.ticks(start, end)))
    assert report.cycles and report.quiet_ticks > report.full_ticks
    assert not report.violations, report.summary()


def test_the_fault_calendar_is_drawn_up_front_at_the_declared_rates():
    start, end = dt.date(2026, 1, 1), dt.date(2027, 1, 1)
    sessions = [start + dt.timedelta(days=i) for i in range(365) if (start + dt.timedelta(days=i)).weekday() < 5]
    faults = year.FaultCalendar.draw(2026, start, end, sessions, max_attempts=5)
    assert faults == year.FaultCalendar.draw(2026, start, end, sessions, max_attempts=5)  # seeded
    assert 0.015 < len(faults.host_down) / 365 < 0.05
    assert 0.015 < len(faults.redis_down) / len(list(year.ticks(start, end))) < 0.025
    assert faults.outage[1] - faults.outage[0] == dt.timedelta(days=7)
    attempts = len(sessions) * len(year.TASKS) * 10
    assert 0.04 < sum(len(v) for v in faults.task_failures.values()) / attempts < 0.06


def _report(cycles):
    start, end = dt.date(2026, 11, 23), dt.date(2026, 11, 28)
    report = year.YearReport(start, end, 0, "test")
    report.cycles = cycles
    return report, start, end


def test_the_checks_catch_a_session_run_after_it_was_done_and_a_weekend_run(tmp_path):
    exchange = year.Exchange.load(dt.date(2026, 10, 1), dt.date(2026, 12, 31))
    tick = dt.datetime(2026, 11, 23, 22, 0, tzinfo=dt.timezone.utc)
    report, start, end = _report([
        year.Cycle(tick, dt.date(2026, 11, 23), False, True, "r1"),
        year.Cycle(tick + dt.timedelta(minutes=5), dt.date(2026, 11, 23), False, True, "r2"),
        year.Cycle(tick + dt.timedelta(days=5), dt.date(2026, 11, 28), True, True, "r3"),  # a Saturday
    ])
    none = year.FaultCalendar(frozenset(), frozenset(), (tick, tick), {})
    (tmp_path / "ledger.jsonl").write_text("")
    sessions = [s for s in exchange.sessions if start <= s < end]
    year.check(report, exchange, none, sessions, tmp_path / "ledger.jsonl", "close+60m", 30, 7, 5)
    found = "\n".join(report.violations)
    assert "no session is run after it is done: 2026-11-23" in found
    assert "no holiday or weekend is ever run: 2026-11-28 (Saturday)" in found
    assert "starts inside it" in found  # 2026-11-24's window had ticks up and no cycle
