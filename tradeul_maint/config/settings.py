"""The settings as values: frozen dataclasses, one per section, a task, a job, and the whole.

load.py builds them (command-line option > environment variable > TOML file > default) and
checks everything once, with values.py and tasks.py, so the rest of the code can trust what it
gets: an unknown key, a bad value, a duplicate task or a dependency cycle is a ConfigError
naming the file, the key and what to write instead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tradeul_maint.base.errors import ConfigError, UsageError

DEFAULT_CONFIG_PATHS = (Path("tradeul-maint.toml"), Path("/etc/tradeul/maint.toml"))
CATCHUP = ("all", "latest", "none")  # a job's: which missed sessions are run (plan/planner.py)
# Job names that would read like the tool's own keys under the default prefix ("maintenance:lock:...").
RESERVED_JOB_NAMES = ("maintenance", "status", "executed", "transitions", "last_run", "lock", "check")
LONGEST_SECONDS = 366 * 86400  # the longest duration a setting may give: a year (times computed from it stay sane)
LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
MAX_REPLICA_TIMEOUT = 2.0  # WAIT holds its connection: shorter than connection.COMMAND_TIMEOUT
# A task without `timeout` is stopped after this: a hung task must not hold the lock (and the scheduler's next
# ticks) for good. `timeout = 0` in a task turns it off.
DEFAULT_TASK_TIMEOUT = 3600.0


@dataclass(frozen=True)
class WindowStart:
    """When a session's window opens: a local wall time on the session's day, or an offset (elapsed time) from
    that session's own open or close, so an early close or a late open moves it."""

    wall_time: dt.time | None = None
    close_offset: dt.timedelta | None = None
    open_offset: dt.timedelta | None = None
    text: str = field(default="", compare=False)  # as the config wrote it, which is how it is shown

    def __str__(self) -> str:
        if self.text:
            return self.text
        if self.wall_time is not None:
            return self.wall_time.strftime("%H:%M")
        anchor, offset = ("close", self.close_offset) if self.close_offset is not None else ("open", self.open_offset)
        minutes = int(offset.total_seconds() // 60)
        hours, rest = divmod(abs(minutes), 60)
        amount = (f"{hours}h" if hours else "") + (f"{rest}m" if rest or not hours else "")
        return f"{anchor}{'+' if minutes >= 0 else '-'}{amount}"


@dataclass(frozen=True)
class ScheduleSettings:
    calendar: str = "XNYS"
    window_start: WindowStart = WindowStart(wall_time=dt.time(17, 0))
    window_minutes: int = 30
    lookback_sessions: int = 7
    auto_recover: bool = True
    recover_during_market_hours: bool = False
    # A cycle started when the window opens should end within this; None: twice window_minutes.
    deadline_minutes: int | None = None
    catchup: str = "all"  # which missed sessions run: "all" oldest first, "latest" the newest, "none" (they expire)
    rerun: str = "run"  # the command that names one of this job's sessions, in what the planner tells an operator

    @property
    def deadline(self) -> dt.timedelta:
        """From the window's start to the session's deadline: the window at risk, and a session done later is late."""
        return dt.timedelta(minutes=self.deadline_minutes or 2 * self.window_minutes)


@dataclass(frozen=True)
class RunSettings:
    max_parallel: int = 1
    max_attempts: int = 5
    retry_backoff_minutes: float = 5
    pythonpath: tuple[Path, ...] = ()  # extra import paths for `python` tasks, absolute
    slow_factor: float = 2.0  # a task whose run takes more than this times its median is slower than usual
    slow_min_seconds: float = 5.0  # ...unless that run took less than this: sub-second noise is never flagged
    stop_grace_seconds: float = 10  # between SIGTERM and SIGKILL of a task's processes when it is stopped
    # A run (every cycle of one invocation) still going after this is stopped as a signal would stop it; None:
    # no limit. The schedulers' own limits (TimeoutStartSec, activeDeadlineSeconds) are this plus a margin.
    max_run_minutes: float | None = 240
    containment: str = "auto"  # "auto": a cgroup v2 per attempt where delegated, else subreapers only; "subreaper"


@dataclass(frozen=True)
class RedisSettings:
    url: str | None = None
    password_file: Path | None = None  # the password of `url`, read when connecting (never held here)
    key_prefix: str = "maintenance"
    status_ttl_days: int = 30
    lock_lease_seconds: float = 60
    min_replicas: int = 0  # > 0: the lock and every state write wait for this many replicas (redisio/replicas.py)
    replica_timeout_seconds: float = 1
    wait_aof: bool = False  # also WAITAOF: the primary's and the replicas' append-only files have each write


@dataclass(frozen=True)
class LoggingSettings:
    dir: Path | None = None  # None: the default /var/log/tradeul
    rotation_bytes: int = 10 * 1024 * 1024
    retention: int = 5
    level: str = "INFO"


@dataclass(frozen=True)
class MetricsSettings:
    textfile: Path | None = None  # a Prometheus textfile (node_exporter's collector), rewritten atomically
    pushgateway: str | None = None  # a Prometheus Pushgateway's URL: the same metrics, pushed (PUT)


@dataclass(frozen=True)
class NotifySettings:
    ping_url: str | None = None  # healthchecks-style: <url>/start, <url>, <url>/fail
    ping_timeout: float = 5.0  # seconds per ping, all included; a hung endpoint costs no more


@dataclass(frozen=True)
class CalendarOverrides:
    """Corrections the calendar library does not know yet."""

    closed: frozenset[dt.date] = frozenset()
    early_closes: dict[dt.date, dt.time] = field(default_factory=dict)
    sessions: frozenset[dt.date] = frozenset()  # extra sessions, at the calendar's regular hours
    expiry_warning_days: int = 30  # warn when the calendar ends sooner than this

    def note(self, day: dt.date) -> str | None:
        """How an override changed this day, for the plans and views that talk about it."""
        if day in self.closed:
            return "closed by override"
        if day in self.sessions and day in self.early_closes:
            return f"extra session by override, early close {self.early_closes[day]:%H:%M} by override"
        if day in self.sessions:
            return "extra session by override"
        if day in self.early_closes:
            return f"early close {self.early_closes[day]:%H:%M} by override"
        return None


@dataclass(frozen=True)
class TaskSpec:
    """One configured task; exactly one of command, python or builtin is set."""

    name: str
    command: tuple[str, ...] | None = None
    python: str | None = None
    builtin: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    timeout: float | None = DEFAULT_TASK_TIMEOUT  # seconds; None: no timeout (`timeout = 0`)
    retries: int = 0
    retry_delay: float = 30
    catchup: str = "all"  # "latest": only for the newest session whose window has opened (plan/planner.py)
    market_closed_only: bool = False  # never started while the exchange is open
    wait_for: tuple[str, ...] | None = None  # a probe (argv): exit 0 = its data is there; else the task waits
    wait_timeout: float | None = None  # seconds a task may wait from its first probe; None: until its window ends
    redis_env: bool = False  # the task's environment gets the Redis URL, password included (run/taskenv.py)

    @property
    def kind(self) -> str:
        return "command" if self.command else "python" if self.python else "builtin"


@dataclass(frozen=True)
class Job:
    """One pipeline run once per session: its own window and catch-up policy, tasks, keys (so lock and states),
    and pings. The top-level `[schedule]` and `[[tasks]]` are the job `maintenance`, under `[redis] key_prefix`;
    each `[jobs.NAME]` is another, under `<key_prefix>:<NAME>` by default. The planner, the runner and the
    views take one job at a time (`Settings.for_job`): jobs share nothing but the calendar and the Redis."""

    name: str
    schedule: ScheduleSettings
    tasks: tuple[TaskSpec, ...]
    key_prefix: str
    notify: NotifySettings = NotifySettings()


MAIN_JOB = "maintenance"


@dataclass(frozen=True)
class Settings:
    config_path: Path | None
    state_dir: Path
    log_dir_override: Path | None
    schedule: ScheduleSettings
    run: RunSettings
    redis: RedisSettings
    logging: LoggingSettings
    calendar: CalendarOverrides
    tasks: tuple[TaskSpec, ...]
    metrics: MetricsSettings = MetricsSettings()
    notify: NotifySettings = NotifySettings()
    calendar_cache: Path | None = None  # a prebuilt, read-only calendar cache (TRADEUL_MAINT_CALENDAR_CACHE)
    jobs: tuple[Job, ...] = ()  # in configuration order: `maintenance` (the top level, when it has tasks) first
    job: str = MAIN_JOB  # the job whose schedule, tasks, key prefix and pings these settings carry (for_job)
    job_prefix: str | None = None  # that job's key prefix; None: [redis] key_prefix

    def for_job(self, job: Job) -> Settings:
        """These settings as one job sees them: its schedule, tasks, key prefix and pings in place of the top
        level's, so that everything that takes settings (planner, runner, views, metrics) works on that job."""
        return replace(self, schedule=job.schedule, tasks=job.tasks, notify=job.notify, job=job.name,
                       job_prefix=job.key_prefix)

    @property
    def key_prefix(self) -> str:
        """The prefix of this job's keys (its lock, its status documents)."""
        return self.job_prefix or self.redis.key_prefix

    def named_jobs(self, names: tuple[str, ...] = ()) -> tuple[Job, ...]:
        """The jobs `--job NAME` (repeatable) names, in configuration order; all of them when none is named."""
        known = {job.name: job for job in self.jobs}
        for name in names:
            if name not in known:
                raise UsageError(f"unknown job {name!r}: configured jobs are {', '.join(known) or 'none'}")
        return tuple(job for job in self.jobs if not names or job.name in names)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """What every key of every job begins with: `redis.delete_keys` never deletes a key under one of them."""
        from tradeul_maint.redisio.keys import Keys

        return tuple(dict.fromkeys(Keys(p).namespace for p in (self.redis.key_prefix,
                                                                *(job.key_prefix for job in self.jobs))))

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)

    @property
    def python_paths(self) -> tuple[str, ...]:
        """Where `python` tasks are imported from, whatever the working directory: the config
        file's directory first, then `[run] pythonpath`; without a config file, the working directory."""
        base = self.config_path.resolve().parent if self.config_path else Path.cwd()
        return tuple(dict.fromkeys(str(p) for p in (base, *self.run.pythonpath)))


@dataclass(frozen=True)
class Overrides:
    """What the command line gave; None means 'not given'."""

    config: Path | None = None
    redis_url: str | None = None
    state_dir: Path | None = None
    log_dir: Path | None = None


# --- loading -------------------------------------------------------------------------


def _containment(value: str) -> str:
    if value not in ("auto", "subreaper"):
        raise ConfigError(f'[run] containment = "{value}": expected "auto" (a cgroup v2 per attempt where one is '
                          'delegated, else a subreaper per attempt) or "subreaper" (never a cgroup)')
    return value
