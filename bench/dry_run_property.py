"""The dry run is the run: hypothesis over configs, histories in Redis and times, on a real redis-server.

    python bench/dry_run_property.py                  # 300 examples, about 6 minutes here
    python bench/dry_run_property.py --examples 1000 --seed 7

Each example writes a config (2 to 5 tasks: dependencies in any file order, `catchup` "all" or
"latest", `market_closed_only`, sometimes a task that fails, sometimes one that waits for its data
(`wait_for`, a probe for a file that some sessions have); `max_attempts`, backoff, the window (a
wall time, or relative to the close or the open), the lookback, `auto_recover`,
`recover_during_market_hours`, the job's `catchup` ("all", "latest", "none"), sometimes an early
close by override, sometimes a dependency of an "all" task on a "latest" one; the pipeline is
the top level or a `[jobs.x]`), a history in Redis (per session: missing, done, done with catch-up
skips, failed after k attempts, a cycle left in progress, corrupt, waiting for the close or for
data, partly run by `--task`; sometimes the run lock held by another run), a moment and a command (cron `run`, `run --date D`, `--force`, `--task`, `recover`,
`--since/--until`, `--lookback`, `--force`). It runs the command with `--dry-run` through the CLI
in process, then for real, with tasks that append a line to a ledger, and compares session by
session, task by task:

- the dry run changed nothing in Redis; a config it refuses (78) or a usage error (2), the real
  call refuses the same way; a lock held by another run: the real call runs nothing, as said;
- a session the dry run leaves alone or does not name is untouched;
- the sessions it would run are run in its order; exactly the tasks it names start, except those
  after a task that failed in the same cycle, which are recorded skipped ("unless a task fails");
  each task it skips is recorded skipped with that reason, each it says waits is left pending
  with that reason, each it says is probed runs when its data is there, else waits for data (and
  what runs after it waits too), or fails once the wait the dry run names is over; the others
  keep their state; the session is done exactly when the rules say; a cycle that only found data
  missing leaves the attempt count as it was;
- the exit code is 1 exactly when a task the call ran failed or was skipped; when none did, the same
  call again has nothing to run (what it ran is done, or waits for the close);
- then, with every task succeeding from there on and `auto_recover` on, one cron `run` at a moment
  the exchange is closed and every backoff has passed leaves every session of its lookback whose
  window has opened done, except one that gave up after `max_attempts` with a task failed, or one
  the job's catchup does not run any more ("none": its window has ended; "latest": a newer
  session's has opened): no reachable state is one that automatic runs can never finish.

The suite runs a few of these examples (tests/test_dry_run_property.py); the figure in
docs/reliability.md comes from this command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults import RedisServer  # noqa: E402

from tradeul_maint.calendar import TradingCalendar, load_calendar  # noqa: E402
from tradeul_maint.commands import app  # noqa: E402
from tradeul_maint.settings import CalendarOverrides, parse_window_start  # noqa: E402
from tradeul_maint.state import COMPLETED, FAILED, IN_PROGRESS, PENDING, SKIPPED, SessionStatus, TaskRecord  # noqa: E402

UTC = dt.timezone.utc
FIRST_DAY, LAST_DAY = dt.date(2026, 11, 16), dt.date(2026, 12, 4)  # Thanksgiving, an early close, weekends
# Minutes never within a few minutes before an open, a close or a window start: a run takes seconds
# of real time, and a dry run is a promise about the moment it is made.
TIMES = ["00:20", "06:00", "09:00", "09:45", "10:05", "11:00", "12:45", "13:05", "15:45", "16:00", "16:05",
         "17:00", "17:05", "17:35", "19:00", "23:45"]
WINDOWS = ["17:00", "close+60m", "close-15m", "10:00", "09:00", "close+9h", "open-5h45m", "open+30m", "open-10h"]
KINDS = ["missing", "missing", "done", "done_skipped", "failed", "failed", "in_progress", "corrupt", "waiting",
         "partial", "waiting_data"]
PREFIX = "maintenance"  # the top level's; a [jobs.x]'s is "maintenance:x"
OVERRIDES = {"early": 'early_closes = { 2026-12-01 = "13:00" }', "closed": 'closed = ["2026-11-19"]'}


# --- what an example is ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    after: tuple[str, ...]
    catchup: str
    closed_only: bool
    fails: bool
    probe: bool = False  # wait_for: its data (a file) is there for the sessions in World.data


@dataclass(frozen=True)
class World:
    tasks: tuple[Task, ...]  # in file order
    window_start: str
    window_minutes: int
    lookback: int
    auto_recover: bool
    during_market: bool
    max_attempts: int
    backoff: float
    max_parallel: int
    override: str  # "", "early" (2026-12-01 closes at 13:00) or "closed" (2026-11-19 is no session)
    now: str  # exchange-local
    history: dict[str, tuple]  # session -> (kind, attempts, minutes before now, seed: which tasks)
    lock_held: bool
    command: tuple[str, ...]
    job: bool = False  # the pipeline is [jobs.x] (the config's only job), not the top level
    job_catchup: str = "all"
    data: frozenset[str] = frozenset()  # sessions whose data the probes find

    @property
    def prefix(self) -> str:
        return f"{PREFIX}:x" if self.job else PREFIX

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> Task:
        return next(t for t in self.tasks if t.name == name)

    def config(self, *, no_failures: bool = False) -> str:
        schedule = [f'window_start = "{self.window_start}"', f"window_minutes = {self.window_minutes}",
                    f"lookback_sessions = {self.lookback}", f"auto_recover = {str(self.auto_recover).lower()}",
                    f"recover_during_market_hours = {str(self.during_market).lower()}",
                    f'catchup = "{self.job_catchup}"']
        lines = ([] if self.job else ["[schedule]", *schedule]) + \
            ["[run]", f"max_attempts = {self.max_attempts}", f"retry_backoff_minutes = {self.backoff}",
             f"max_parallel = {self.max_parallel}"]
        if self.override:
            lines += ["[calendar]", OVERRIDES[self.override]]
        if self.job:
            lines += ["[jobs.x]", *schedule]
        for t in self.tasks:
            exit_code = 3 if t.fails and not no_failures else 0
            lines += ["[[jobs.x.tasks]]" if self.job else "[[tasks]]", f'name = "{t.name}"',
                      f'command = ["/bin/sh", "-c", "echo \\"$1 $2\\" >> \\"$3\\"; exit {exit_code}", "sh", '
                      f'"{{date}}", "{t.name}", "LEDGER"]',
                      f"after = {json.dumps(list(t.after))}", f'catchup = "{t.catchup}"',
                      f"market_closed_only = {str(t.closed_only).lower()}"]
            if t.probe:
                lines.append('wait_for = ["test", "-e", "DATA/{date}"]')
        return "\n".join(lines) + "\n"

    @property
    def refused(self) -> bool:
        """Whether the settings must refuse it: an "all" task after a "latest" one."""
        return any(t.catchup == "all" and self.task(d).catchup == "latest" for t in self.tasks for d in t.after)


def _sessions(calendar: TradingCalendar) -> list[dt.date]:
    return calendar.sessions_between(FIRST_DAY - dt.timedelta(days=21), LAST_DAY)


@st.composite
def worlds(draw, calendar: TradingCalendar) -> World:
    count = draw(st.integers(2, 5))
    names = [f"t{i}" for i in range(count)]  # a topological order; the file order is drawn below
    tasks = []
    for i, name in enumerate(names):
        after = tuple(draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=min(i, 2)))) if i else ()
        probe = draw(st.sampled_from([False] * 3 + [True]))
        tasks.append(Task(name, after, draw(st.sampled_from(["all", "all", "latest"])),
                          draw(st.booleans()), not probe and draw(st.sampled_from([False] * 6 + [True])), probe))
    if draw(st.sampled_from([True] * 6 + [False])):  # mostly valid configs: repair each "all" after "latest"
        policy = {t.name: t.catchup for t in tasks}
        repaired = []
        for t in tasks:
            if t.catchup == "all" and any(policy[d] == "latest" for d in t.after):
                if draw(st.booleans()):
                    t = Task(t.name, tuple(d for d in t.after if policy[d] != "latest"), "all", t.closed_only,
                             t.fails, t.probe)
                else:
                    t = Task(t.name, t.after, "latest", t.closed_only, t.fails, t.probe)
                policy[t.name] = t.catchup
            repaired.append(t)
        tasks = repaired
    tasks = [tasks[i] for i in draw(st.permutations(range(count)))]
    day = draw(st.dates(FIRST_DAY, LAST_DAY))
    now = f"{day}T{draw(st.sampled_from(TIMES))}"
    recent = [s for s in _sessions(calendar) if s <= day][-10:]
    history = {}
    for session in recent:
        kind = draw(st.sampled_from(KINDS))
        if kind != "missing":
            history[session.isoformat()] = (kind, draw(st.integers(1, 5)), draw(st.integers(0, 600)),
                                            draw(st.integers(0, 2 ** 16)))
    date = draw(st.sampled_from(recent)).isoformat()
    since, until = sorted(draw(st.lists(st.sampled_from(recent), min_size=2, max_size=2)))
    named = draw(st.lists(st.sampled_from([t.name for t in tasks]), min_size=1, max_size=2, unique=True))
    command = draw(st.sampled_from([
        ("run",), ("run",), ("run", "--date", date), ("run", "--date", date, "--force"),
        ("run", "--date", date, *[a for n in named for a in ("--task", n)]), ("recover",), ("recover", "--force"),
        ("recover", "--since", since.isoformat(), "--until", until.isoformat()),
        ("recover", "--lookback", str(draw(st.integers(1, 6)))),
    ]))
    data = frozenset(d.isoformat() for d in recent if draw(st.booleans()))
    return World(tuple(tasks), draw(st.sampled_from(WINDOWS)), draw(st.sampled_from([30, 120, 600, 960])),
                 draw(st.integers(1, 6)), draw(st.booleans()), draw(st.booleans()), draw(st.integers(1, 4)),
                 draw(st.sampled_from([0, 5, 30])), draw(st.sampled_from([1, 1, 3])),
                 draw(st.sampled_from(["", "", "early", "closed"])), now, history,
                 draw(st.sampled_from([False] * 9 + [True])), command, draw(st.booleans()),
                 draw(st.sampled_from(["all", "all", "latest", "none"])), data)


def stored_status(world: World, session: dt.date, kind: str, attempts: int, minutes: int, seed: int,
                  now: dt.datetime) -> str:
    """The document a history kind leaves, as the runner (or a hand) would have written it."""
    if kind == "corrupt":
        return '{"date": "' + session.isoformat() + '", "tasks": ['
    names = world.names
    pick = [names[i] for i in range(len(names)) if seed >> i & 1] or names[:1]  # a seeded subset of the tasks
    started = now - dt.timedelta(minutes=minutes + 3)
    finished = now - dt.timedelta(minutes=minutes)
    status = SessionStatus(session, started_at=started, completed_at=finished, attempts=attempts,
                           tasks={n: COMPLETED for n in names}, details={n: TaskRecord(attempts=1) for n in names})
    if kind == "done":
        status.all_success = True
    elif kind == "done_skipped":
        status.all_success = True
        for n in pick:
            status.tasks[n] = SKIPPED
            status.details[n] = TaskRecord(reason='catchup = "latest": runs for a newer session only')
    elif kind == "failed":
        for n in pick:
            status.tasks[n] = FAILED if seed & 1 else SKIPPED
            status.details[n] = TaskRecord(attempts=1, error="exit code 3")
    elif kind == "in_progress":
        status.completed_at = None
        status.tasks[pick[0]] = IN_PROGRESS
        for n in pick[1:]:
            status.tasks[n] = PENDING
        status.run_id, status.runner = "0123456789ab", "another-host:4242"
    elif kind == "waiting":
        for n in pick:
            status.tasks[n] = PENDING
            status.details[n] = TaskRecord(reason="waits for the close at 16:00 America/New_York")
    elif kind == "waiting_data":
        since = (now - dt.timedelta(minutes=minutes + 20)).astimezone(dt.timezone.utc).isoformat()
        for n in pick:
            status.tasks[n] = PENDING
            status.details[n] = TaskRecord(reason="waits for data (test failed with exit code 1)", waiting_since=since)
    elif kind == "partial":
        for n in pick:
            status.tasks[n] = PENDING
    return status.to_json()


# --- one example ------------------------------------------------------------------------------------

WOULD = re.compile(r"^would run (\d{4}-\d\d-\d\d) \((.*)\): (.*)$")
LEAVE = re.compile(r"^leave (\d{4}-\d\d-\d\d): ")
DETAIL = re.compile(r"^  (skip|wait) (\S+): (.*)$")
PROBE = re.compile(r"^  probe (\S+): .* until (\d{4}-\d\d-\d\d \d\d:\d\d)$")
WAITS_FOR_DATA = "waiting for data"  # a task's outcome that is neither a state of its own nor a failure


@dataclass
class Said:
    """What the dry run printed, parsed."""

    order: list[str] = field(default_factory=list)  # sessions it would run, in its order
    run: dict[str, list[str]] = field(default_factory=dict)
    skip: dict[str, dict[str, str]] = field(default_factory=dict)
    wait: dict[str, dict[str, str]] = field(default_factory=dict)
    probe: dict[str, dict[str, str]] = field(default_factory=dict)  # until when each probed task may wait (local)
    busy: bool = False


def parse_dry_run(text: str) -> Said:
    said, current = Said(), None
    for line in text.splitlines():
        if m := WOULD.match(line):
            current = m[1]
            said.order.append(current)
            said.run[current] = [] if m[3] == "no tasks" else m[3].split(", ")
            said.skip[current], said.wait[current], said.probe[current] = {}, {}, {}
        elif m := PROBE.match(line):
            said.probe[current][m[1]] = m[2]
        elif m := DETAIL.match(line):
            (said.skip if m[1] == "skip" else said.wait)[current][m[2]] = m[3]
        elif line.startswith("but the lock is held by"):
            said.busy = True
        elif not (LEAVE.match(line) or line in ("nothing to do", "nothing to recover")):
            raise AssertionError(f"a dry-run line this check does not know: {line!r}")
    return said


class Bench:
    """A working directory, a real redis-server's URL and the calendar cache; `check(world)` runs one example."""

    def __init__(self, root: Path, redis_url: str, calendar_cache: Path):
        self.root, self.redis_url, self.calendar_cache = root, redis_url, calendar_cache
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.tried = self.refused = self.busy = self.sessions_run = self.tasks_started = self.waits = 0
        self.finished_later = self.idle = self.data_waits = 0
        self._calendars: dict[str, TradingCalendar] = {}

    def calendar(self, override: str) -> TradingCalendar:
        if override not in self._calendars:
            overrides = CalendarOverrides(
                early_closes={dt.date(2026, 12, 1): dt.time(13, 0)} if override == "early" else {},
                closed=frozenset({dt.date(2026, 11, 19)}) if override == "closed" else frozenset())
            self._calendars[override] = load_calendar("XNYS", overrides, self.calendar_cache)
        return self._calendars[override]

    def cli(self, *args: str):
        env = {"TRADEUL_MAINT_CONFIG": str(self.root / "maint.toml"), "TRADEUL_MAINT_REDIS_URL": self.redis_url,
               "TRADEUL_MAINT_STATE_DIR": str(self.root / "state"), "TRADEUL_MAINT_LOG_DIR": str(self.root / "logs"),
               "TRADEUL_MAINT_CALENDAR_CACHE": str(self.calendar_cache), "TRADEUL_MAINT_NOW": None,
               "REDIS_URL": None, "TRADEUL_MAINT_REDIS_PASSWORD_FILE": None, "TRADEUL_MAINT_PUSHGATEWAY": None}
        return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)

    def write_config(self, world: World, no_failures: bool = False) -> None:
        (self.root / "maint.toml").write_text(world.config(no_failures=no_failures)
                                              .replace("LEDGER", str(self.root / "ledger"))
                                              .replace("DATA", str(self.root / "data")))

    def write_data(self, sessions) -> None:
        """The files the probes look for: the data of these sessions is there, and only theirs."""
        shutil.rmtree(self.root / "data", ignore_errors=True)
        (self.root / "data").mkdir()
        for session in sessions:
            (self.root / "data" / str(session)).touch()

    def snapshot(self) -> dict[str, tuple]:
        """Every key: its type, its value, whether it expires."""
        return {key: (self.client.type(key), self._value(key), self.client.pttl(key) > 0)
                for key in self.client.keys("*")}

    def _value(self, key: str):
        kind = self.client.type(key)
        return self.client.get(key) if kind == "string" else self.client.hgetall(key) if kind == "hash" else kind

    def ledger(self) -> list[tuple[str, str]]:
        path = self.root / "ledger"
        lines = path.read_text().split("\n") if path.exists() else []
        path.unlink(missing_ok=True)
        return [tuple(line.split(" ")) for line in lines if line]

    def docs(self, prefix: str = PREFIX) -> dict[str, SessionStatus | None]:
        keys = self.client.keys(f"{prefix}:status:*")
        return {k.rsplit(":", 1)[1]: SessionStatus.from_json(dt.date.fromisoformat(k.rsplit(":", 1)[1]),
                                                             self.client.get(k)) for k in keys}

    def check(self, world: World) -> None:
        """One example; AssertionError names the first disagreement."""
        self.tried += 1
        self.client.flushall()
        (self.root / "ledger").unlink(missing_ok=True)
        self.write_config(world)
        self.write_data(world.data)
        calendar = self.calendar(world.override)
        now = dt.datetime.fromisoformat(world.now).replace(tzinfo=calendar.tz)
        prefix = world.prefix
        for day, (kind, attempts, minutes, seed) in world.history.items():
            self.client.set(f"{prefix}:status:{day}", stored_status(world, dt.date.fromisoformat(day), kind,
                                                                    attempts, minutes, seed, now), ex=40 * 86400)
        if world.lock_held:
            self.client.set(f"{prefix}:lock", json.dumps({"host": "another-host", "pid": 4242, "since": world.now,
                                                         "run_id": "another-run", "nonce": "x"}), px=600_000)
        before = self.snapshot()
        dry = self.cli(*world.command, "--dry-run", "--now", world.now)
        assert self.snapshot() == before, "the dry run changed Redis"
        real = self.cli(*world.command, "--now", world.now)
        ran = self.ledger()
        if world.refused:
            assert dry.exit_code == real.exit_code == 78, (dry.output, real.output)
            assert "catchup" in dry.stderr and not ran
            self.refused += 1
            return
        assert dry.exit_code in (0, 2), dry.output
        if dry.exit_code == 2:  # usage: a date that is not a session, a range with none
            assert real.exit_code == 2 and not ran and self.snapshot() == before, real.output
            return
        said = parse_dry_run(dry.stdout)
        if said.busy:
            cron = world.command == ("run",)
            assert real.exit_code == (0 if cron else 75) and not ran, real.output
            assert self.snapshot() == before
            self.busy += 1
            return
        self.idle += not said.order
        self._compare(world, said, before, real, ran, now)
        if world.auto_recover:
            self._finishes(world, calendar, now)

    def _compare(self, world: World, said: Said, before: dict, real, ran: list[tuple[str, str]],
                 now: dt.datetime) -> None:
        prefix = world.prefix
        after = self.docs(prefix)
        earlier = {}
        for key, (_, raw, _) in before.items():
            if key.startswith(f"{prefix}:status:"):
                day = key.rsplit(":", 1)[1]
                earlier[day] = SessionStatus.from_json(dt.date.fromisoformat(day), raw)
        sessions_ran = [s for s, _ in ran]
        assert set(sessions_ran) <= set(said.order), (said.order, ran)
        assert sessions_ran == sorted(sessions_ran, key=said.order.index), (said.order, ran)
        failed_any = data_waits = False
        for day in said.order:
            old, new = earlier.get(day), after[day]
            assert new is not None and not new.corrupt
            started = [t for s, t in ran if s == day]
            possible = self._outcomes(world, said, day, now)
            # What starts: the named tasks that can, none after one that failed, was skipped or waits for data.
            expected = [n for n in said.run[day] if possible[n] in ({COMPLETED}, {FAILED})
                        and not (n in said.probe[day] and day not in world.data)]
            assert sorted(started) == sorted(expected), (day, said.run[day], started, possible)
            assert len(started) == len(set(started)), (day, started)
            recorded_failure = waited = False
            for name in world.names:
                state, record = new.tasks.get(name), new.details.get(name) or TaskRecord()
                if name in said.run[day]:
                    outcome = WAITS_FOR_DATA if state == PENDING and (record.reason or "").startswith(
                        "waits for data") and record.waiting_since else state
                    assert outcome in possible[name], (day, name, state, record, possible[name])
                    recorded_failure |= outcome in (FAILED, SKIPPED)
                    waited |= outcome == WAITS_FOR_DATA
                elif name in said.skip[day]:
                    why = said.skip[day][name]
                    assert state == SKIPPED and (record.reason if why.startswith("catchup") else record.error) == why
                    recorded_failure |= not why.startswith("catchup")
                elif name in said.wait[day]:
                    assert state == PENDING and record.reason == said.wait[day][name], (day, name, record)
                    self.waits += 1
                else:  # not considered by this call (--task): as it was; one left in progress is now failed
                    was = old.tasks.get(name, PENDING) if old is not None and not old.corrupt else PENDING
                    assert state == (FAILED if was == IN_PROGRESS else was), (day, name, was, state)
            failed_any |= recorded_failure
            data_waits |= waited
            readable_old = old is not None and not old.corrupt
            # A cycle that only found data missing is no attempt.
            only_waited = waited and not started and not recorded_failure
            assert new.attempts == (old.attempts if readable_old else 0) + (0 if only_waited else 1), \
                (day, new.attempts, old and old.attempts, only_waited)
            settled = all(new.tasks.get(n) == COMPLETED or (new.tasks.get(n) == SKIPPED and new.details[n].reason)
                          for n in world.names)
            assert new.done == settled, (day, new.tasks)
            forced_or_pending = "--task" not in world.command
            if forced_or_pending and not said.wait[day] and not waited and not any(
                    new.tasks.get(n) in (FAILED, SKIPPED) and not (new.details.get(n) and new.details[n].reason)
                    for n in world.names):
                assert new.done, (day, new.tasks)
            self.sessions_run += 1
            self.tasks_started += len(started)
            self.data_waits += waited
        touched = {f"{prefix}:{kind}:{d}" for d in said.order for kind in ("status", "executed")}
        for key, value in before.items():  # every other key as it was
            if key not in touched and key != f"{prefix}:last_run":
                assert self.client.type(key) == value[0] and self._value(key) == value[1], key
        assert real.exit_code == (1 if failed_any else 0), (real.exit_code, real.output)
        if not failed_any and not data_waits and "--task" not in world.command and "--force" not in world.command:
            # The same call again (cron calls every few minutes) has nothing left to do: what it ran is done,
            # or waits for the close; no cycle that would change nothing. (One waiting for data probes again.)
            again = parse_dry_run(self.cli(*world.command, "--dry-run", "--now", world.now).stdout)
            assert not again.order, (again.order, again.run)

    def _outcomes(self, world: World, said: Said, day: str, now: dt.datetime) -> dict[str, set[str]]:
        """What each task the dry run says would run may end as: completed; failed (it fails, or its probe finds
        no data once the wait the dry run names is over); waiting for data; skipped after a failure. A task after
        both a failure and a wait ends as whichever reached it first: either."""
        possible: dict[str, set[str]] = {}
        for name in _dependencies_first(world):
            if name not in said.run[day]:
                continue
            deps = set().union(*(possible[d] for d in world.task(name).after if d in possible))
            own = ({COMPLETED} if name not in said.probe[day] or day in world.data else
                   {FAILED} if now.replace(tzinfo=None) >= dt.datetime.fromisoformat(said.probe[day][name])
                   else {WAITS_FOR_DATA})
            own = {FAILED} if world.task(name).fails and own == {COMPLETED} else own
            blocked = ({SKIPPED} if deps & {FAILED, SKIPPED} else set()) | (deps & {WAITS_FOR_DATA})
            possible[name] = blocked or own
        return possible

    def _finishes(self, world: World, calendar: TradingCalendar, now: dt.datetime) -> None:
        """With no failure from here on and every session's data there, one cron tick once the exchange is closed
        and every backoff has passed finishes every session in its view whose window has opened, but one that
        gave up after a failure, or one the job's catchup leaves (worked out here from the calendar alone)."""
        later = now + dt.timedelta(hours=9)  # past any backoff the history holds (30 min doubled 4 times)
        while (close := calendar.open_until(later) or calendar.open_until(later + dt.timedelta(minutes=15))):
            later = close + dt.timedelta(minutes=5)
        if calendar.local_date(later) > LAST_DAY + dt.timedelta(days=3):
            return
        prefix = world.prefix
        self.client.delete(f"{prefix}:lock")
        self.write_config(world, no_failures=True)
        self.write_data(_sessions(calendar))
        stuck_before = self.docs(prefix)
        tick = self.cli("run", "--now", later.astimezone(calendar.tz).replace(tzinfo=None).isoformat())
        assert tick.exit_code == 0, tick.output
        self.ledger()
        from tradeul_maint.planner import failed_tasks, sessions_in_view

        schedule = _schedule(world)
        after = self.docs(prefix)
        view = sessions_in_view(later, calendar, schedule)
        opened = [s for s in view if calendar.window(s, schedule.window_start, schedule.window_minutes).start <= later]
        for session in opened:
            window = calendar.window(session, schedule.window_start, schedule.window_minutes)
            old = stuck_before.get(session.isoformat())
            gave_up = old is not None and not old.corrupt and not old.done and old.attempts >= world.max_attempts \
                and (failed_tasks(old) or old.unfinished)
            left = (world.job_catchup == "none" and window.end <= later) or \
                (world.job_catchup == "latest" and session < max(opened))
            status = after.get(session.isoformat())
            assert gave_up or (status is not None and status.done) or left, \
                (session, later, old and old.tasks, status and status.tasks)
        self.finished_later += 1


def _dependencies_first(world: World) -> list[str]:
    order: list[str] = []
    while len(order) < len(world.tasks):
        order += [t.name for t in world.tasks if t.name not in order and all(d in order for d in t.after)]
    return order


def _schedule(world: World):
    from tradeul_maint.settings import ScheduleSettings

    return ScheduleSettings(window_start=parse_window_start(world.window_start), window_minutes=world.window_minutes,
                            lookback_sessions=world.lookback, auto_recover=world.auto_recover,
                            recover_during_market_hours=world.during_market, catchup=world.job_catchup)


def run_property(bench: Bench, examples: int, seed: int | None = None) -> None:
    """Run `examples` examples through hypothesis; raises with the shrunk example at the first disagreement."""
    calendar = bench.calendar("")
    options = settings(max_examples=examples, deadline=None, database=None, print_blob=True,
                       suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])

    @options
    @given(worlds(calendar))
    def prop(world: World) -> None:
        bench.check(world)

    if seed is not None:
        prop = __import__("hypothesis").seed(seed)(prop)
    prop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dry-run-property-") as tmp:
        root = Path(tmp)
        server = RedisServer(root / "redis").start()
        cache = root / "cache"
        load_calendar("XNYS", CalendarOverrides(), cache)
        (root / "work").mkdir()
        bench = Bench(root / "work", server.url, cache)
        started = time.monotonic()
        try:
            run_property(bench, args.examples, args.seed)
            verdict = "disagreements: 0"
        except AssertionError as exc:
            verdict = f"disagreement: {str(exc)[:2000]}"
        finally:
            server.proc.terminate()
            server.proc.wait(10)
        print(f"python bench/dry_run_property.py --examples {args.examples} --seed {args.seed}\n"
              f"examples tried {bench.tried} in {time.monotonic() - started:.0f} s: {bench.refused} configs refused at "
              f"load (78), {bench.busy} with the lock held, {bench.idle} with nothing to run; {bench.sessions_run} "
              f"sessions run, {bench.tasks_started} tasks started, {bench.waits} tasks left waiting for the close, "
              f"{bench.data_waits} sessions with tasks waiting for data; "
              f"{bench.finished_later} followed by a cron tick after the close that had to finish every session\n"
              f"{verdict}")
        if not verdict.endswith(": 0"):
            sys.exit(1)


if __name__ == "__main__":
    main()
