"""A simulated trading year: every 5-minute cron tick of 2026, in process, against a real Redis, with faults.

    python bench/year.py                      # the whole of 2026, seed 2026
    python bench/year.py --seed 7 --window 17:00
    python bench/year.py --start 2026-11-01 --end 2027-01-01
    python bench/year.py --phases             # every phase of the day: examples/phases.toml (bench/year_phases.py)

Each tick does what the cron entry does: `core.quiet_tick(settings, now)` (the cheap path
of every tick with nothing to do), and when that is not a plain "nothing", `core.prepare`
and `core.run`. Time is the `now` text; a cycle's tasks (python tasks, and one command)
take milliseconds of real time. Faults come from a seeded RNG and are written up front as
a fault calendar: the host down for whole days (3% of days), Redis down for single ticks
(2%: the tick is pointed at a port nobody listens on), one week-long Redis outage, and
tasks failing at random (5% per attempt: the task reads the calendar file, keyed by
session, task and attempt, and counts its attempts in the ledger, so the decision does not
depend on where the task runs). The year crosses both DST changes and the early closes.

The invariants are checked from the outside, against exchange-calendars directly (not the
tool's own calendar) and the tasks' ledger (bench/ledger.py):

- no session is run after it is done;
- no holiday or weekend is ever run;
- every session whose window had a tick with the host and Redis up starts inside its window;
- every missed session in the lookback is attempted at the first tick with the host and
  Redis up and the market closed, and done then unless a task failed in that attempt (then
  it is done later, unless it gave up after max_attempts or left the lookback);
- no two cycles ever overlap (their tasks' executions, by run id).

Running 105,120 ticks in one process would otherwise re-read the calendar cache and open
a new Redis connection on every tick, as a fresh cron process must (about 3 ms a tick
here, 5 minutes for the year). So by default the simulation keeps the calendar and one
connection across ticks (`shortcuts`: `core.load_calendar` memoized, with the span of its
sessions that the TTL check asks on every tick; `core.open_redis` reusing one client, and
one client for the dead port), and a tick with Redis down pings the dead
port once, without the one retry the tool's client makes after 0.1 s (4,000 such ticks
would otherwise sleep for 7 minutes); the error still goes up through `core.connected`,
which turns it into the RedisUnavailableError the tick must raise. `--no-shortcuts` runs
everything unpatched.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import random
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ledger  # noqa: E402

from faults import RedisServer, dead_url  # noqa: E402

NY = ZoneInfo("America/New_York")
UTC = dt.timezone.utc
TICK = dt.timedelta(minutes=5)
TASKS = ("load", "compute", "export")  # compute after load; export is a command


@dataclass(frozen=True)
class FaultCalendar:
    """Every fault of the year, decided before the first tick."""

    host_down: frozenset[dt.date]  # exchange-local days with no tick at all
    redis_down: frozenset[dt.datetime]  # single ticks (UTC) with Redis unreachable
    outage: tuple[dt.datetime, dt.datetime]  # [start, end) UTC: Redis down for a week
    task_failures: dict[str, list[int]]  # "session/task" -> attempts that fail

    @classmethod
    def draw(cls, seed: int, start: dt.date, end: dt.date, sessions: list[dt.date], max_attempts: int,
             host_rate: float = 0.03, redis_rate: float = 0.02, task_rate: float = 0.05,
             outage_days: int = 7) -> FaultCalendar:
        rng = random.Random(seed)
        days = [start + dt.timedelta(days=i) for i in range((end - start).days)]
        host_down = frozenset(d for d in days if rng.random() < host_rate)
        redis_down = frozenset(t for t in ticks(start, end) if rng.random() < redis_rate)
        first = rng.choice(days[:max(1, len(days) - outage_days)])
        begin = dt.datetime.combine(first, dt.time(rng.randrange(24)), NY).astimezone(UTC)
        outage = (begin, begin + dt.timedelta(days=outage_days))
        failures = {}
        for session in sessions:
            for task in TASKS:
                failing = [n for n in range(1, max_attempts * 2 + 1) if rng.random() < task_rate]
                if failing:
                    failures[f"{session}/{task}"] = failing
        return cls(host_down, redis_down, outage, failures)

    def host_up(self, tick: dt.datetime) -> bool:
        return tick.astimezone(NY).date() not in self.host_down

    def redis_up(self, tick: dt.datetime) -> bool:
        return tick not in self.redis_down and not self.outage[0] <= tick < self.outage[1]

    def to_json(self) -> dict:
        return {"host_down": sorted(d.isoformat() for d in self.host_down),
                "redis_down": sorted(t.isoformat() for t in self.redis_down),
                "outage": [t.isoformat() for t in self.outage], "task_failures": self.task_failures}


def ticks(start: dt.date, end: dt.date) -> Iterator[dt.datetime]:
    """Every 5-minute tick from `start` 00:00 to `end` 00:00, exchange-local days, as UTC instants."""
    t = dt.datetime.combine(start, dt.time(0), NY).astimezone(UTC)
    stop = dt.datetime.combine(end, dt.time(0), NY).astimezone(UTC)
    while t < stop:
        yield t
        t += TICK


@dataclass(frozen=True)
class Exchange:
    """The truth the invariants are checked against: exchange-calendars itself, not the tool's cache."""

    sessions: list[dt.date]
    opens: dict[dt.date, dt.datetime]
    closes: dict[dt.date, dt.datetime]

    @classmethod
    def load(cls, first: dt.date, last: dt.date) -> Exchange:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import exchange_calendars as xcals

            schedule = xcals.get_calendar("XNYS").schedule.loc[first.isoformat():last.isoformat()]
            days = [d.date() for d in schedule.index]
            opens = {d: o.to_pydatetime().astimezone(UTC) for d, o in zip(days, schedule["open"])}
            closes = {d: c.to_pydatetime().astimezone(UTC) for d, c in zip(days, schedule["close"])}
        return cls(days, opens, closes)

    def window(self, session: dt.date, start: str, minutes: int) -> tuple[dt.datetime, dt.datetime]:
        """`HH:MM` that day in New York, or `open`/`close` of that session plus or minus `XhYm` (elapsed time)."""
        if relative := re.fullmatch(r"(open|close)([+-])(?:(\d+)h)?(?:(\d+)m)?", start):
            anchor, sign, hours, mins = relative.groups()
            offset = dt.timedelta(hours=int(hours or 0), minutes=int(mins or 0))
            base = (self.opens if anchor == "open" else self.closes)[session]
            begin = base + (offset if sign == "+" else -offset)
        else:
            begin = dt.datetime.combine(session, dt.time.fromisoformat(start), NY).astimezone(UTC)
        return begin, begin + dt.timedelta(minutes=minutes)

    def market_open(self, moment: dt.datetime) -> bool:
        day = moment.astimezone(NY).date()
        return day in self.opens and self.opens[day] <= moment < self.closes[day]

    def lookback(self, moment: dt.datetime, count: int) -> list[dt.date]:
        today = moment.astimezone(NY).date()
        return [s for s in self.sessions if s <= today][-count:]


@dataclass
class Cycle:
    tick: dt.datetime
    session: dt.date
    recovery: bool
    success: bool
    run_id: str


@dataclass
class YearReport:
    start: dt.date
    end: dt.date
    seed: int
    settings: str
    ticks: int = 0
    quiet_ticks: int = 0
    full_ticks: int = 0
    host_down_ticks: int = 0
    redis_down_ticks: int = 0
    cycles: list[Cycle] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    sessions: int = 0
    catchups: int = 0
    gave_up: list[str] = field(default_factory=list)
    left_lookback: list[str] = field(default_factory=list)
    worst_delay_sessions: int = 0
    worst_delay_hours: float = 0.0
    task_failures: int = 0
    seconds: float = 0.0
    run_seconds: float = 0.0  # of which in the full runs (prepare + run)

    def violate(self, invariant: str, evidence: str) -> None:
        self.violations.append(f"{invariant}: {evidence}")

    def summary(self) -> str:
        failed_cycles = sum(not c.success for c in self.cycles)
        lines = [
            f"simulated {self.start} to {self.end} (seed {self.seed}; {self.settings}) in {self.seconds:.1f}s, "
            f"of which {self.run_seconds:.1f}s in the full runs",
            f"ticks {self.ticks}: {self.quiet_ticks} through the quiet path, {self.full_ticks} full runs, "
            f"{self.host_down_ticks} with the host down, {self.redis_down_ticks} with Redis down",
            f"sessions {self.sessions}; cycles (attempts) {len(self.cycles)}, of which failed {failed_cycles} "
            f"({self.task_failures} task attempts failed on purpose); catch-ups {self.catchups}",
            f"worst catch-up delay: {self.worst_delay_sessions} session(s), {self.worst_delay_hours:.1f} hours "
            "after the window's end",
            f"gave up (max_attempts): {len(self.gave_up)} {self.gave_up[:5]}; left the lookback undone: "
            f"{len(self.left_lookback)} {self.left_lookback[:5]}",
            f"invariant violations: {len(self.violations)}",
        ]
        lines += [f"  {v}" for v in self.violations[:20]]
        return "\n".join(lines)


@contextlib.contextmanager
def shortcuts(live_url: str) -> Iterator[None]:
    """Keep the calendar and one Redis connection across ticks (see the module docstring)."""
    import redis

    from tradeul_maint import core

    original_calendar, original_open = core.load_calendar, core.open_redis
    client = redis.Redis.from_url(live_url, socket_timeout=5)

    calendars: dict[tuple[str, str, str], object] = {}
    dead: dict[str, redis.Redis] = {}

    def load_calendar(code, overrides, cache_dir, *rest, **options):
        key = (code, repr(overrides), str(cache_dir))
        if key not in calendars:
            calendar = original_calendar(code, overrides, cache_dir, *rest, **options)
            # A pure question of a calendar that no longer changes, asked on every tick (the TTL check).
            calendar.max_span_days = functools.lru_cache(maxsize=None)(calendar.max_span_days)
            calendars[key] = calendar
        return calendars[key]

    @contextlib.contextmanager
    def open_redis(url, state_dir, *rest, **options):
        if url != live_url:
            # The dead port of a Redis-down tick, pinged once: redis-py's ConnectionError goes up through
            # core.connected, which turns it into the RedisUnavailableError a real tick reports.
            if url not in dead:
                dead[url] = redis.Redis.from_url(url, socket_connect_timeout=2)
            dead[url].ping()
        yield client, url  # no PING: the tick's own commands find out soon enough

    core.load_calendar, core.open_redis = load_calendar, open_redis
    try:
        yield
    finally:
        core.load_calendar, core.open_redis = original_calendar, original_open
        for c in (client, *dead.values()):
            c.close()


def simulate(work: Path, seed: int = 2026, start: dt.date = dt.date(2026, 1, 1), end: dt.date = dt.date(2027, 1, 1),
             window: str = "close+60m", window_minutes: int = 30, lookback: int = 7, max_attempts: int = 5,
             backoff_minutes: float = 5, use_shortcuts: bool = True, faults: FaultCalendar | None = None,
             progress: bool = False) -> YearReport:
    from loguru import logger

    from tradeul_maint import core
    from tradeul_maint.errors import MaintError, RedisUnavailableError
    from tradeul_maint.logs import configure_logging
    from tradeul_maint.settings import Overrides, load_settings

    began = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    exchange = Exchange.load(start - dt.timedelta(days=60), end + dt.timedelta(days=10))
    year_sessions = [s for s in exchange.sessions if start <= s < end]
    faults = faults or FaultCalendar.draw(seed, start, end, year_sessions, max_attempts)
    (work / "faults.json").write_text(json.dumps(faults.to_json(), indent=1))
    task_faults = work / "task-faults.json"
    task_faults.write_text(json.dumps(faults.task_failures))
    script, _ = ledger.install(work)
    book = work / "ledger.jsonl"
    config = work / "maint.toml"
    config.write_text(f"""
[schedule]
window_start = "{window}"
window_minutes = {window_minutes}
lookback_sessions = {lookback}
[run]
max_attempts = {max_attempts}
retry_backoff_minutes = {backoff_minutes}
[calendar]
expiry_warning_days = 0
[logging]
level = "WARNING"
[[tasks]]
name = "load"
python = "ledger_pytask:task"
params = {{ ledger = "{book}", faults = "{task_faults}" }}
[[tasks]]
name = "compute"
python = "ledger_pytask:task"
params = {{ ledger = "{book}", faults = "{task_faults}" }}
after = ["load"]
[[tasks]]
name = "export"
command = {json.dumps([sys.executable, str(script), str(book), "export", "{date}", "0", "--faults", str(task_faults)])}
""")
    server = RedisServer(work / "redis").start()
    report = YearReport(start, end, seed, f"window {window} for {window_minutes} min, lookback {lookback}, "
                                           f"max_attempts {max_attempts}, backoff {backoff_minutes:g} min")
    try:
        overrides = Overrides(config=config, redis_url=server.url, state_dir=work / "state", log_dir=work / "logs")
        live = load_settings(overrides, env={})
        down = load_settings(Overrides(config=config, redis_url=dead_url(), state_dir=work / "state",
                                       log_dir=work / "logs"), env={})
        configure_logging(live, quiet=True)
        with shortcuts(server.url) if use_shortcuts else contextlib.nullcontext():
            for tick in ticks(start, end):
                report.ticks += 1
                if progress and report.ticks % 10000 == 0:
                    print(f"  {tick:%Y-%m-%d} ticks {report.ticks} cycles {len(report.cycles)} "
                          f"{time.monotonic() - began:.0f}s", file=sys.stderr, flush=True)
                if not faults.host_up(tick):
                    report.host_down_ticks += 1
                    continue
                now = tick.isoformat()
                if not faults.redis_up(tick):
                    report.redis_down_ticks += 1
                    try:
                        core.quiet_tick(down, now)
                        report.violate("a tick with Redis down says so", f"{now}: quiet_tick returned")
                    except RedisUnavailableError:
                        pass
                    continue
                try:
                    if core.quiet_tick(live, now):
                        report.quiet_ticks += 1
                        continue
                    report.full_ticks += 1
                    began_run = time.monotonic()
                    (run,) = core.run(core.prepare(live, now))  # the one job: the top-level pipeline
                    report.run_seconds += time.monotonic() - began_run
                except MaintError as exc:
                    report.violate("every tick with the host and Redis up succeeds",
                                   f"{now}: {type(exc).__name__}: {exc}")
                    continue
                recovery = {p.session: p.recovery for p in run.plan.sessions}
                for result in run.results:
                    report.cycles.append(Cycle(tick, result.session, recovery.get(result.session, False),
                                               result.success, result.status.run_id or ""))
        logger.remove()
    finally:
        server.stop()
    check(report, exchange, faults, year_sessions, book, window, window_minutes, lookback, max_attempts)
    report.seconds = time.monotonic() - began
    return report


def check(report: YearReport, exchange: Exchange, faults: FaultCalendar, sessions: list[dt.date], book: Path,
          window: str, minutes: int, lookback: int, max_attempts: int) -> None:
    """The invariants of the module docstring, from the cycles the harness saw and the tasks' ledger."""
    report.sessions = len(sessions)
    execs = ledger.executions(book)
    report.task_failures = sum(e.failed for e in execs)
    known = set(exchange.sessions)
    by_session: dict[dt.date, list[Cycle]] = {}
    for c in report.cycles:
        by_session.setdefault(c.session, []).append(c)

    # No holiday or weekend is ever run (the cycles, and what the tasks themselves say).
    for s in sorted({c.session for c in report.cycles} | {dt.date.fromisoformat(e.session) for e in execs}):
        if s not in known:
            report.violate("no holiday or weekend is ever run", f"{s} ({s:%A}) was run")

    # No session is run after it is done.
    for s, cycles in by_session.items():
        done = next((i for i, c in enumerate(cycles) if c.success), None)
        if done is not None and done < len(cycles) - 1:
            later = cycles[done + 1]
            report.violate("no session is run after it is done",
                           f"{s} done at {cycles[done].tick:%Y-%m-%d %H:%M}Z, "
                           f"run again at {later.tick:%Y-%m-%d %H:%M}Z")

    # No task ran outside a cycle the harness saw, and no two cycles overlap.
    runs = {c.run_id for c in report.cycles}
    strays = [e for e in execs if e.run and e.run not in runs]
    if strays:
        report.violate("every task execution belongs to a cycle", "; ".join(e.describe() for e in strays[:3]))
    overlap = ledger.overlapping(execs, same_task=False)
    if overlap:
        report.violate("no two cycles ever overlap",
                       "; ".join(f"{a.describe()} || {b.describe()}" for a, b in overlap[:3]))

    up = lambda t: faults.host_up(t) and faults.redis_up(t)  # noqa: E731
    end_of_sim = dt.datetime.combine(report.end, dt.time(0), NY).astimezone(UTC)
    for s in sessions:
        begin, end = exchange.window(s, window, minutes)
        cycles = by_session.get(s, [])
        first = cycles[0].tick if cycles else None
        if begin >= end_of_sim:
            continue  # its window opens after the last tick simulated
        in_window = [t for t in _aligned(begin, min(end, end_of_sim)) if up(t)]
        if in_window:
            # Started inside its window (at the first tick of it with everything up).
            if first is None or not begin <= first < end:
                report.violate("every session whose window fell while the host and Redis were up starts inside it",
                               f"{s}: window {begin:%m-%d %H:%M}-{end:%H:%M}Z had {len(in_window)} tick(s) up "
                               f"(first {in_window[0]:%H:%M}Z); first cycle {first and f'{first:%Y-%m-%d %H:%M}Z'}")
            elif first != in_window[0]:
                report.violate("every session whose window fell while the host and Redis were up starts inside it",
                               f"{s}: first tick up in the window {in_window[0]:%H:%M}Z, first cycle {first:%H:%M}Z")
            continue
        # Missed: the first tick after the window with the host and Redis up and the market closed.
        catch = next((t for t in _aligned(end, end_of_sim) if up(t) and not exchange.market_open(t)), None)
        if catch is None:
            continue  # the simulation ended first
        if s not in exchange.lookback(catch, lookback):
            if not any(c.success for c in cycles):
                report.left_lookback.append(s.isoformat())
            continue
        at_catch = [c for c in cycles if c.tick == catch]
        if not at_catch:
            report.violate("every missed session in the lookback is done by the first tick with the host and "
                           "Redis up and the market closed",
                           f"{s}: window ended {end:%m-%d %H:%M}Z, first such tick {catch:%m-%d %H:%M}Z, cycles at "
                           + (", ".join(f"{c.tick:%m-%d %H:%M}Z" for c in cycles) or "none"))
            continue
        report.catchups += 1
        if not at_catch[0].success:
            failed = [e for e in execs if e.run == at_catch[0].run_id and e.failed]
            if not failed:
                report.violate("a catch-up fails only when a task failed",
                               f"{s} at {catch:%m-%d %H:%M}Z failed with no task failure in the ledger")
        done = next((c for c in cycles if c.success), None)
        if done is None:
            if len(cycles) >= max_attempts:
                report.gave_up.append(s.isoformat())
            continue
        delay_sessions = sum(1 for x in exchange.sessions if s < x <= done.tick.astimezone(NY).date())
        report.worst_delay_sessions = max(report.worst_delay_sessions, delay_sessions)
        report.worst_delay_hours = max(report.worst_delay_hours, (done.tick - end).total_seconds() / 3600)

    # Every session of the year that is not done at the end: say why.
    for s in sessions:
        if not any(c.success for c in by_session.get(s, [])) and s.isoformat() not in report.gave_up + \
                report.left_lookback:
            begin, end = exchange.window(s, window, minutes)
            if end < end_of_sim - dt.timedelta(days=2):
                report.violate("every session is done, gave up or left the lookback",
                               f"{s}: cycles {[(f'{c.tick:%m-%d %H:%M}Z', c.success) for c in by_session.get(s, [])]}")


def _aligned(begin: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    """The 5-minute ticks in [begin, end)."""
    epoch = int(begin.timestamp())
    t = dt.datetime.fromtimestamp(epoch + (-epoch) % 300, UTC)
    while t < end:
        yield t
        t += TICK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 1, 1))
    parser.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2027, 1, 1))
    parser.add_argument("--window", default="close+60m", help='window_start: "17:00" or "close+60m" (default)')
    parser.add_argument("--window-minutes", type=int, default=30)
    parser.add_argument("--lookback", type=int, default=7)
    parser.add_argument("--no-shortcuts", action="store_true", help="no memoized calendar or reused connection")
    parser.add_argument("--keep", type=Path, help="keep the work directory (ledger, fault calendar, logs) here")
    parser.add_argument("--phases", action="store_true", help="the ten jobs of examples/phases.toml instead")
    args = parser.parse_args(argv)
    if args.phases:
        import year_phases

        with tempfile.TemporaryDirectory(prefix="tradeul-phases-") as tmp:
            phases = year_phases.simulate(args.keep or Path(tmp), args.seed, args.start, args.end, progress=True)
        print(phases.summary())
        return 1 if phases.violations else 0
    with tempfile.TemporaryDirectory(prefix="tradeul-year-") as tmp:
        report = simulate(args.keep or Path(tmp), args.seed, args.start, args.end, args.window, args.window_minutes,
                          args.lookback, use_shortcuts=not args.no_shortcuts, progress=True)
    print(report.summary())
    return 1 if report.violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
