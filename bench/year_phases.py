"""The simulated year of every phase of the trading day: examples/phases.toml, every 5-minute tick of 2026.

    python bench/year.py --phases                  # the whole of 2026, seed 2026
    python bench/year.py --phases --start 2026-11-20 --end 2026-12-01

The ten jobs of the example (issue 24's seven phases), each task replaced by a ledger task of
the same name (bench/ledger.py) and the flat-file watcher's probe pointed at a directory the
simulation fills: a session's flat file appears at a time drawn up front (already there at the
window's start, within 2 hours, within 6, or never). The host is down for whole days (3 %), so
windows are missed. Each tick does what the cron entry does (`core.quiet_tick`, then
`core.prepare` and `core.run` when that is not a plain "nothing"), as in bench/year.py.

Every job's every window is then checked against exchange-calendars directly (not the tool's
cache), the ledger (what ran, under which run id) and the ticks the harness saw:

- nothing runs for a day that is not a session, nor before its job's window opens;
- no task runs twice for a session, and no two runs of one job overlap;
- a window with a tick of the host up runs its session at that first tick (the watcher: at the
  first such tick at which the session's file is there);
- a missed window: "none" never runs it (expired); "all" runs it at the first tick up with the
  market closed while it is in the lookback; "latest" the same, unless a newer session's window
  has opened by then (then never);
- a watcher whose file never comes ends failed with "still waiting for data" once its window
  has passed, and waiting cost no attempt: a session synced in its window took one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ledger  # noqa: E402
from faults import RedisServer  # noqa: E402
from year import NY, UTC, Exchange, _aligned, shortcuts, ticks  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "phases.toml"
WATCHER = "flat_files"


@dataclass(frozen=True)
class Job:
    name: str
    window: str
    minutes: int
    catchup: str
    tasks: tuple[str, ...]


@dataclass
class PhasesReport:
    start: dt.date
    end: dt.date
    seed: int
    ticks: int = 0
    quiet_ticks: int = 0
    full_ticks: int = 0
    host_down_ticks: int = 0
    runs: dict[str, dt.datetime] = field(default_factory=dict)  # run id -> the tick it ran at
    windows: dict[str, int] = field(default_factory=dict)  # per job: windows checked
    expired: dict[str, int] = field(default_factory=dict)  # per job: missed windows left (none, latest)
    caught_up: dict[str, int] = field(default_factory=dict)  # per job: missed windows run later
    waited: int = 0  # watcher sessions that waited at least one tick for their file
    never: int = 0  # watcher sessions whose file never came
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def violate(self, invariant: str, evidence: str) -> None:
        self.violations.append(f"{invariant}: {evidence}")

    def summary(self) -> str:
        per_job = ", ".join(f"{j} {n}/{self.expired.get(j, 0)}/{self.caught_up.get(j, 0)}"
                            for j, n in self.windows.items())
        lines = [f"simulated {self.start} to {self.end} (seed {self.seed}; examples/phases.toml, 10 jobs) in "
                 f"{self.seconds:.0f}s",
                 f"ticks {self.ticks}: {self.quiet_ticks} through the quiet path, {self.full_ticks} full runs, "
                 f"{self.host_down_ticks} with the host down",
                 f"windows checked per job (windows/expired/caught up): {per_job}",
                 f"watcher: {self.waited} sessions waited for their file at least one tick, {self.never} never got "
                 "it (failed once their window ended)",
                 f"invariant violations: {len(self.violations)}"]
        return "\n".join(lines + [f"  {v}" for v in self.violations[:20]])


def jobs_of(example: dict) -> list[Job]:
    return [Job(name, t["window_start"], t["window_minutes"], t.get("catchup", "all"),
                tuple(task["name"] for task in t["tasks"])) for name, t in example["jobs"].items()]


def config(example: dict, script: Path, book: Path, flat: Path) -> str:
    """The example with each task a ledger task of the same name (its window, catchup, market_closed_only and
    wait_for kept; the watcher's probe pointed at `flat`)."""
    lines = ["[schedule]", f'calendar = "{example["schedule"]["calendar"]}"',
             f'lookback_sessions = {example["schedule"]["lookback_sessions"]}',
             "[calendar]", "expiry_warning_days = 0", "[logging]", 'level = "WARNING"']
    for name, t in example["jobs"].items():
        lines += [f"[jobs.{name}]"] + [f"{k} = {json.dumps(v)}" for k, v in t.items() if k != "tasks"]
        for task in t["tasks"]:
            lines += [f"[[jobs.{name}.tasks]]", f'name = "{task["name"]}"',
                      "command = " + json.dumps([sys.executable, str(script), str(book), task["name"], "{date}", "0"])]
            if task.get("market_closed_only"):
                lines.append("market_closed_only = true")
            if "wait_for" in task:
                lines.append("wait_for = " + json.dumps(["test", "-e", f"{flat}/{{date}}.csv.gz"]))
    return "\n".join(lines) + "\n"


def draw_files(seed: int, sessions: list[dt.date], exchange: Exchange, window: tuple[str, int]
               ) -> dict[dt.date, dt.datetime | None]:
    """When each session's flat file appears: at its watcher window's start (70 %), within 2 hours (25 %), within
    6 hours (4 %), or never (1 %): each tick it is missing costs a full run (a probe under a supervisor)."""
    rng = random.Random(f"{seed}:files")
    files = {}
    for s in sessions:
        begin, _ = exchange.window(s, *window)
        roll = rng.random()
        files[s] = begin if roll < 0.70 else begin + dt.timedelta(minutes=rng.randrange(5, 120)) if roll < 0.95 \
            else begin + dt.timedelta(minutes=rng.randrange(120, 360)) if roll < 0.99 else None
    return files


def simulate(work: Path, seed: int = 2026, start: dt.date = dt.date(2026, 1, 1),
             end: dt.date = dt.date(2027, 1, 1), progress: bool = False, host_rate: float = 0.03) -> PhasesReport:
    from loguru import logger

    from tradeul_maint import core
    from tradeul_maint.errors import MaintError
    from tradeul_maint.logs import configure_logging
    from tradeul_maint.settings import Overrides, load_settings

    began = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    example = tomllib.loads(EXAMPLE.read_text())
    jobs = jobs_of(example)
    exchange = Exchange.load(start - dt.timedelta(days=60), end + dt.timedelta(days=10))
    sessions = [s for s in exchange.sessions if start <= s < end]
    watcher = next(j for j in jobs if j.name == WATCHER)
    files = draw_files(seed, sessions, exchange, (watcher.window, watcher.minutes))
    rng = random.Random(f"{seed}:host")
    host_down = {start + dt.timedelta(days=i) for i in range((end - start).days) if rng.random() < host_rate}
    script, _ = ledger.install(work)
    book, flat = work / "ledger.jsonl", work / "flat"
    flat.mkdir(exist_ok=True)
    (work / "phases.toml").write_text(config(example, script, book, flat))
    server = RedisServer(work / "redis").start()
    report = PhasesReport(start, end, seed)
    pending = sorted((t, s) for s, t in files.items() if t is not None)
    try:
        settings = load_settings(Overrides(config=work / "phases.toml", redis_url=server.url,
                                           state_dir=work / "state", log_dir=work / "logs"), env={})
        configure_logging(settings, quiet=True)
        with shortcuts(server.url):
            for tick in ticks(start, end):
                report.ticks += 1
                while pending and pending[0][0] <= tick:  # the vendor's file lands
                    (flat / f"{pending.pop(0)[1]}.csv.gz").touch()
                if progress and report.ticks % 10000 == 0:
                    print(f"  {tick:%Y-%m-%d} ticks {report.ticks} runs {len(report.runs)} "
                          f"{time.monotonic() - began:.0f}s", file=sys.stderr, flush=True)
                if tick.astimezone(NY).date() in host_down:
                    report.host_down_ticks += 1
                    continue
                now = tick.isoformat()
                try:
                    if core.quiet_tick(settings, now):
                        report.quiet_ticks += 1
                        continue
                    report.full_ticks += 1
                    for run in core.run(core.prepare(settings, now)):
                        if run.error is not None:
                            report.violate("every job's run succeeds", f"{now} {run.job}: {run.error}")
                        for result in run.results:
                            report.runs[result.status.run_id or ""] = tick
                except MaintError as exc:
                    report.violate("every tick succeeds", f"{now}: {type(exc).__name__}: {exc}")
        logger.remove()
        documents = _documents(server, jobs, sessions)
    finally:
        server.stop()
    check(report, exchange, jobs, sessions, files, host_down, ledger.executions(book), documents,
          example["schedule"]["lookback_sessions"])
    report.seconds = time.monotonic() - began
    return report


def _documents(server: RedisServer, jobs: list[Job], sessions: list[dt.date]) -> dict[tuple[str, dt.date], dict]:
    """Each job's status document of each session, as the run left it (for the watcher's failures)."""
    with server.client() as client:
        found = {}
        for job in jobs:
            for s in sessions:
                raw = client.get(f"maintenance:{job.name}:status:{s}")
                with contextlib.suppress(ValueError, TypeError):
                    found[(job.name, s)] = json.loads(raw) if raw else {}
        return found


def check(report: PhasesReport, exchange: Exchange, jobs: list[Job], sessions: list[dt.date],
          files: dict[dt.date, dt.datetime | None], host_down: set[dt.date], execs: list[ledger.Execution],
          documents: dict, lookback: int) -> None:
    """The invariants of the module docstring, job by job, window by window."""
    end_of_sim = dt.datetime.combine(report.end, dt.time(0), NY).astimezone(UTC)
    known = set(exchange.sessions)
    job_of = {task: job for job in jobs for task in job.tasks}
    up = lambda t: t.astimezone(NY).date() not in host_down  # noqa: E731
    stray = [e for e in execs if e.run not in report.runs]
    if stray:
        report.violate("every execution belongs to a run the harness saw", "; ".join(e.describe() for e in stray[:3]))
    for e in execs:
        if dt.date.fromisoformat(e.session) not in known:
            report.violate("nothing runs for a day that is not a session", e.describe())
    same_job = [(a, b) for a, b in ledger.overlapping(execs, same_task=False)
                if job_of[a.task] is job_of[b.task]]
    if same_job:
        report.violate("no two runs of one job overlap", "; ".join(f"{a.describe()} || {b.describe()}"
                                                                   for a, b in same_job[:3]))
    by = {}
    for e in execs:
        by.setdefault((e.task, dt.date.fromisoformat(e.session)), []).append(e)
    for job in jobs:
        report.windows[job.name] = 0
        for s in sessions:
            begin, end = exchange.window(s, job.window, job.minutes)
            if begin >= end_of_sim or end > end_of_sim - dt.timedelta(days=4):
                continue  # the simulation ends before this window could be decided and caught up
            report.windows[job.name] += 1
            ran = by.get((job.tasks[0], s), [])
            where = f"{job.name} {s} (window {begin.astimezone(NY):%m-%d %H:%M}-{end.astimezone(NY):%m-%d %H:%M})"
            if len(ran) > 1:
                report.violate("no task runs twice for a session", f"{where}: " + "; ".join(e.describe() for e in ran))
            tick = report.runs.get(ran[0].run) if ran else None
            if tick is not None and tick < begin:
                report.violate("nothing runs before its window opens", f"{where}: ran at {tick:%m-%d %H:%M}Z")
            expected = _expected(job, s, begin, end, exchange, files, up, end_of_sim, lookback)
            if expected == "expired":
                report.expired[job.name] = report.expired.get(job.name, 0) + 1
            elif isinstance(expected, dt.datetime) and expected >= end:
                report.caught_up[job.name] = report.caught_up.get(job.name, 0) + 1
            if job.name == WATCHER:
                _check_watcher(report, s, begin, end, files, expected, tick, documents.get((job.name, s), {}),
                               where)
            if isinstance(expected, dt.datetime) and tick != expected:
                report.violate("each window runs its session at the tick the rules say",
                               f"{where}: expected at {expected:%m-%d %H:%M}Z, ran at "
                               f"{tick and f'{tick:%m-%d %H:%M}Z'}")
            elif expected in ("expired", "never") and tick is not None:
                report.violate("a missed window that is not caught up never runs",
                               f"{where}: {expected}, but ran at {tick:%m-%d %H:%M}Z")


def _expected(job: Job, s: dt.date, begin: dt.datetime, end: dt.datetime, exchange: Exchange, files: dict,
              up, end_of_sim: dt.datetime, lookback: int) -> dt.datetime | str | None:
    """The tick at which the rules run `job`'s session `s` ("expired" / "never" when they do not; None when the
    simulation ends first), worked out from exchange-calendars alone."""
    ready = files.get(s, begin) if job.name == WATCHER else begin
    in_window = [t for t in _aligned(begin, end) if up(t) and (ready is not None and t >= ready)]
    if in_window:
        return in_window[0]
    if job.name == WATCHER and ready is None:
        return "never"
    if job.catchup == "none":
        return "expired"
    for t in _aligned(end, end_of_sim):
        if not up(t) or exchange.market_open(t) or (job.name == WATCHER and t < ready):
            continue
        if s not in exchange.lookback(t, lookback):
            return "never"  # left the lookback first
        if job.catchup == "latest":
            newer = [x for x in exchange.sessions if s < x and exchange.window(x, job.window, job.minutes)[0] <= t]
            if newer:
                return "expired"
        return t
    return None


def _check_watcher(report: PhasesReport, s: dt.date, begin: dt.datetime, end: dt.datetime, files: dict,
                   expected, tick, doc: dict, where: str) -> None:
    """The watcher waited without attempts; a file that never came fails the task with the reason."""
    ready = files.get(s)
    if ready is None:
        report.never += 1
        reason = (doc.get("task_details") or {}).get("sync_flat_file", {}).get("error") or ""
        if doc and not reason.startswith("still waiting for data after"):
            report.violate("a file that never comes fails the watcher with the reason", f"{where}: {reason!r}")
        return
    if ready > begin:
        report.waited += 1
    if tick is not None and begin <= tick < end and doc.get("attempts") != 1:
        report.violate("waiting for data is no attempt", f"{where}: attempts {doc.get('attempts')}")
