"""Settings: command-line option > environment variable > TOML file > default.

Everything is validated here, once, so the rest of the code can trust what it gets:
an unknown key, a bad value, a duplicate task or a dependency cycle is a ConfigError
naming the file, the key and what to write instead.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tradeul_maint.errors import ConfigError, UsageError
from tradeul_maint.redact import remember, remember_url

DEFAULT_CONFIG_PATHS = (Path("tradeul-maint.toml"), Path("/etc/tradeul/maint.toml"))
TASK_NAME = re.compile(r"^[a-z0-9_-]+$")
WALL_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# "close", "close+60m", "open-5h45m": an offset (hours, minutes or both) from that session's open or close.
RELATIVE = re.compile(r"^(open|close)(?:([+-])(?=\d)(?:(\d+)h)?(?:(\d+)m)?)?$")
CATCHUP = ("all", "latest", "none")  # a job's: which missed sessions are run (planner.py)
# Job names that would read like the tool's own keys under the default prefix ("maintenance:lock:...").
RESERVED_JOB_NAMES = ("maintenance", "status", "executed", "transitions", "last_run", "lock", "check")
LONGEST_SECONDS = 366 * 86400  # the longest duration a setting may give: a year (times computed from it stay sane)
DURATION = re.compile(r"^(\d+)\s*(s|m|h)?$")
SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB)$", re.IGNORECASE)
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
    min_replicas: int = 0  # > 0: the lock and every state write wait for this many replicas (replicas.py)
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
    catchup: str = "all"  # "latest": only for the newest session whose window has opened (planner.py)
    market_closed_only: bool = False  # never started while the exchange is open
    wait_for: tuple[str, ...] | None = None  # a probe (argv): exit 0 = its data is there; else the task waits
    wait_timeout: float | None = None  # seconds a task may wait from its first probe; None: until its window ends
    redis_env: bool = False  # the task's environment gets the Redis URL, password included (taskenv.py)

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
        from tradeul_maint.keys import Keys

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


def load_settings(cli: Overrides, env: dict[str, str] | None = None, require_tasks: bool = True) -> Settings:
    env = os.environ if env is None else env
    path = _config_path(cli, env)
    if path is None and require_tasks:
        raise ConfigError(f"no config file found (looked for {searched()}): write one there, or give --config "
                          "PATH or TRADEUL_MAINT_CONFIG")
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    where = str(path) if path else "defaults"
    try:
        return _build(raw, path, cli, env, require_tasks)
    except ConfigError as exc:
        raise ConfigError(f"config error in {where}: {exc}") from None


def searched() -> str:
    """Where a config file is looked for when neither --config nor TRADEUL_MAINT_CONFIG names one."""
    return ", ".join(str(p if p.is_absolute() else Path.cwd() / p) for p in DEFAULT_CONFIG_PATHS)


def _config_path(cli: Overrides, env: dict[str, str]) -> Path | None:
    if cli.config is not None:
        explicit, given = cli.config, f"--config {cli.config}"
    elif env.get("TRADEUL_MAINT_CONFIG"):
        explicit = Path(env["TRADEUL_MAINT_CONFIG"])
        given = f"TRADEUL_MAINT_CONFIG={explicit}"
    else:
        return next((p for p in DEFAULT_CONFIG_PATHS if p.is_file()), None)
    if explicit.is_dir():
        raise ConfigError(f"{given} is a directory: give the config file itself "
                          f"(e.g. {explicit / 'maint.toml'})")
    if not explicit.is_file():
        raise ConfigError(f"config file {explicit} does not exist ({given})")
    return explicit


def _build(raw: dict, path: Path | None, cli: Overrides, env: dict[str, str], require_tasks: bool) -> Settings:
    _only(raw, "", {"schedule", "run", "redis", "logging", "calendar", "metrics", "notify", "tasks", "jobs"})
    schedule = _schedule(_table(raw, "schedule"))
    run = _run(_table(raw, "run"), path)
    redis = _redis(_table(raw, "redis"), path, cli, env)
    logging = _logging(_table(raw, "logging"))
    calendar = _calendar(_table(raw, "calendar"))
    notify = _notify(_table(raw, "notify"))
    jobs_table = raw.get("jobs", {})
    if not isinstance(jobs_table, dict):
        raise ConfigError("jobs must be written as [jobs.NAME] tables")
    tasks = _tasks(raw.get("tasks", []), require_tasks and not jobs_table)
    jobs = _jobs(jobs_table, schedule, tasks, redis, notify, require_tasks)
    _protect_own_keys(jobs, redis)
    state_dir = cli.state_dir or (Path(env["TRADEUL_MAINT_STATE_DIR"]) if env.get("TRADEUL_MAINT_STATE_DIR") else None)
    if state_dir is None:
        xdg = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "state")
        state_dir = Path(xdg) / "tradeul-maint"
    log_dir = cli.log_dir or (Path(env["TRADEUL_MAINT_LOG_DIR"]) if env.get("TRADEUL_MAINT_LOG_DIR") else None)
    calendar_cache = env.get("TRADEUL_MAINT_CALENDAR_CACHE")
    return Settings(
        config_path=path,
        state_dir=state_dir.expanduser(),
        log_dir_override=log_dir,
        schedule=schedule,
        run=run,
        redis=redis,
        logging=logging,
        calendar=calendar,
        tasks=tasks,
        metrics=_metrics(_table(raw, "metrics"), path, env),
        notify=notify,
        calendar_cache=Path(calendar_cache).expanduser() if calendar_cache else None,
        jobs=jobs,
    )


def _jobs(table: dict, schedule: ScheduleSettings, tasks: tuple[TaskSpec, ...], redis: RedisSettings,
          notify: NotifySettings, require_tasks: bool) -> tuple[Job, ...]:
    """The top-level pipeline as the job `maintenance` (when it has tasks, or when there is no other job), then
    each `[jobs.NAME]` in file order. A job's schedule keys default to `[schedule]`'s, its pings to `[notify]`."""
    jobs = [Job(MAIN_JOB, schedule, tasks, redis.key_prefix, notify)] if tasks or not table else []
    for name, t in table.items():
        section = f"jobs.{name}"
        if not TASK_NAME.match(name):
            raise ConfigError(f"[{section}]: a job name is lowercase letters, digits, '_' or '-'")
        if name in RESERVED_JOB_NAMES:
            raise ConfigError(f"[{section}]: {name!r} is reserved (the top-level [[tasks]] are the job "
                              f"{MAIN_JOB!r}, and the names of the tool's own keys are taken): choose another name")
        if not isinstance(t, dict):
            raise ConfigError(f"[{section}] must be a table")
        _only(t, section, _JOB_KEYS)
        job_tasks = _tasks(t.get("tasks", []), False, f"{section}.")
        if not job_tasks and require_tasks:
            raise ConfigError(f"[{section}] has no tasks: add at least one [[{section}.tasks]] table")
        prefix = _typed(t, section, "key_prefix", str, f"{redis.key_prefix}:{name}")
        if not prefix or any(c.isspace() for c in prefix):
            raise ConfigError(f"[{section}] key_prefix = {prefix!r}: must be non-empty without spaces")
        own = t.get("notify", {})
        if not isinstance(own, dict):
            raise ConfigError(f"[{section}.notify] must be a table")
        _only(own, f"{section}.notify", _KNOWN["notify"])
        job_notify = _notify({**{k: v for k, v in (("ping_url", notify.ping_url), ("ping_timeout", notify.ping_timeout))
                                 if v is not None}, **own}, f"{section}.notify")
        job_schedule = _schedule({k: v for k, v in t.items() if k not in ("tasks", "key_prefix", "notify")},
                                 section, schedule)
        jobs.append(Job(name, replace(job_schedule, rerun=f"run --job {name}"), job_tasks, prefix, job_notify))
    seen: dict[str, str] = {}
    for job in jobs:
        if job.key_prefix in seen:
            raise ConfigError(f"jobs {seen[job.key_prefix]!r} and {job.name!r} have the same key prefix "
                              f"{job.key_prefix!r}: each job needs keys (a lock, status documents) of its own")
        seen[job.key_prefix] = job.name
    return tuple(jobs)


def _table(raw: dict, name: str) -> dict:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    _only(value, name, None)
    return value


_KNOWN = {
    "schedule": {"calendar", "window_start", "window_minutes", "lookback_sessions", "auto_recover",
                 "recover_during_market_hours", "deadline_minutes", "catchup"},
    "run": {"max_parallel", "max_attempts", "retry_backoff_minutes", "pythonpath", "slow_factor",
            "slow_min_seconds", "stop_grace_seconds", "max_run_minutes", "containment"},
    "redis": {"url", "password_file", "key_prefix", "status_ttl_days", "lock_lease_seconds", "min_replicas",
              "replica_timeout_seconds", "wait_aof"},
    "logging": {"dir", "rotation", "retention", "level"},
    "calendar": {"closed", "early_closes", "sessions", "expiry_warning_days"},
    "metrics": {"textfile", "pushgateway"},
    "notify": {"ping_url", "ping_timeout"},
    "tasks": {"name", "command", "python", "builtin", "params", "after", "timeout", "retries", "retry_delay",
              "catchup", "market_closed_only", "wait_for", "wait_timeout", "redis_env"},
}
# A [jobs.NAME] table: its schedule (defaults: [schedule]'s), its keys, tasks and pings.
_JOB_KEYS = (_KNOWN["schedule"] - {"calendar"}) | {"key_prefix", "tasks", "notify"}


def _only(table: dict, section: str, known: set[str] | None, where: str | None = None) -> None:
    known = _KNOWN[section] if known is None else known
    for key in table:
        if key not in known:
            where = where or (f"in [{section}]" if section else "at top level")
            hint = ", ".join(sorted(known))
            raise ConfigError(f"unknown key '{key}' {where} (known: {hint})")


def _typed(table: dict, section: str, key: str, kind: type | tuple, default: Any) -> Any:
    if key not in table:
        return default
    check_type(f"[{section}] {key}", table[key], kind)
    return table[key]


_TOML_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "an array",
               dict: "a table"}


def check_type(what: str, value: Any, kind: type | tuple, suffix: str = "") -> None:
    """A value of the wrong type, said in TOML's words (the file's, not Python's: `true`, "an array")."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return  # booleans are ints in Python, never in a config file
    names = "a number" if set(kinds) == {int, float} else " or ".join(_TOML_KINDS.get(k, k.__name__) for k in kinds)
    shown = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    raise ConfigError(f"{what} = {shown}: expected {names}{suffix}")


def _positive(section: str, key: str, value: float, minimum: float = 1, maximum: float | None = None) -> float:
    """A count, limit or duration within its bounds. A duration's maximum keeps every time computed from it
    (a deadline, a backoff, a key's TTL) within what datetime and Redis can hold."""
    if not math.isfinite(value):  # TOML has nan and inf: neither is a count, a limit or a duration
        raise ConfigError(f"[{section}] {key} = {value}: must be a finite number, at least {minimum}")
    if value < minimum:
        raise ConfigError(f"[{section}] {key} = {value}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"[{section}] {key} = {value}: must be at most {maximum:g}")
    return value


def parse_window_start(text: str, section: str = "schedule") -> WindowStart:
    text = text.strip().replace(" ", "")
    if match := WALL_TIME.match(text):
        return WindowStart(wall_time=dt.time(int(match[1]), int(match[2])), text=text)
    if match := RELATIVE.match(text):
        anchor, sign, hours, minutes = match.groups()
        total = int(hours or 0) * 60 + int(minutes or 0)  # compared before it becomes a timedelta: any digits load
        if total > 24 * 60:
            raise ConfigError(f"[{section}] window_start = {text!r}: an offset from the {anchor} must be within "
                              "24 hours")
        offset = dt.timedelta(minutes=-total if sign == "-" else total)
        return WindowStart(**{f"{anchor}_offset": offset}, text=text)
    raise ConfigError(f"[{section}] window_start = {text!r}: expected a local time like \"17:00\", or an offset "
                      "from the session's close or open like \"close+60m\", \"close-15m\", \"open-5h45m\", "
                      "\"open+30m\"")


def _schedule(t: dict, section: str = "schedule", d: ScheduleSettings = ScheduleSettings()) -> ScheduleSettings:
    """`[schedule]`, or a job's schedule keys (`section` "jobs.NAME", defaults `d` from [schedule])."""
    calendar = _typed(t, section, "calendar", str, d.calendar).strip()
    if not calendar:
        raise ConfigError("[schedule] calendar is empty: give an exchange-calendars code such as \"XNYS\"")
    window_start = parse_window_start(_typed(t, section, "window_start", str, str(d.window_start)), section) \
        if "window_start" in t else d.window_start
    window_minutes = _typed(t, section, "window_minutes", int, d.window_minutes)
    if not 1 <= window_minutes <= 24 * 60:
        raise ConfigError(f"[{section}] window_minutes = {window_minutes}: must be between 1 and 1440")
    catchup = _typed(t, section, "catchup", str, d.catchup)
    if catchup not in CATCHUP:
        raise ConfigError(f"[{section}] catchup = {catchup!r}: expected \"all\" (every missed session, oldest "
                          "first), \"latest\" (only the newest) or \"none\" (a missed window expires)")
    return ScheduleSettings(
        calendar=calendar.upper() if calendar.isalpha() else calendar,
        window_start=window_start,
        window_minutes=window_minutes,
        lookback_sessions=int(_positive(section, "lookback_sessions",
                                        _typed(t, section, "lookback_sessions", int, d.lookback_sessions))),
        auto_recover=_typed(t, section, "auto_recover", bool, d.auto_recover),
        recover_during_market_hours=_typed(t, section, "recover_during_market_hours", bool,
                                           d.recover_during_market_hours),
        deadline_minutes=d.deadline_minutes if "deadline_minutes" not in t else
        int(_positive(section, "deadline_minutes", _typed(t, section, "deadline_minutes", int, None), 1,
                      LONGEST_SECONDS / 60)),
        catchup=catchup,
    )


def _run(t: dict, config_path: Path | None) -> RunSettings:
    d = RunSettings()
    paths = _typed(t, "run", "pythonpath", list, [])
    if not all(isinstance(p, str) and p for p in paths):
        raise ConfigError("[run] pythonpath must be a list of directories (relative to the config file)")
    base = config_path.resolve().parent if config_path else Path.cwd()
    return RunSettings(
        pythonpath=tuple((base / Path(p).expanduser()).resolve() for p in paths),
        max_parallel=int(_positive("run", "max_parallel", _typed(t, "run", "max_parallel", int, d.max_parallel))),
        max_attempts=int(_positive("run", "max_attempts", _typed(t, "run", "max_attempts", int, d.max_attempts))),
        retry_backoff_minutes=_positive("run", "retry_backoff_minutes",
                                        _typed(t, "run", "retry_backoff_minutes", (int, float),
                                               d.retry_backoff_minutes), 0, LONGEST_SECONDS / 60),
        slow_factor=float(_positive("run", "slow_factor", _typed(t, "run", "slow_factor", (int, float),
                                                                 d.slow_factor), 1)),
        slow_min_seconds=float(_positive("run", "slow_min_seconds", _typed(
            t, "run", "slow_min_seconds", (int, float), d.slow_min_seconds), 0)),
        stop_grace_seconds=float(_positive("run", "stop_grace_seconds", _typed(
            t, "run", "stop_grace_seconds", (int, float), d.stop_grace_seconds), 0.1)),
        max_run_minutes=_max_run_minutes(_typed(t, "run", "max_run_minutes", (int, float), d.max_run_minutes)),
        containment=_containment(_typed(t, "run", "containment", str, d.containment)),
    )


def _max_run_minutes(value: float) -> float | None:
    """0 is no limit; anything else must leave a run time to start its tasks (and a test time to stop one)."""
    if value == 0:
        return None
    return float(_positive("run", "max_run_minutes", value, 0.01))


def _containment(value: str) -> str:
    if value not in ("auto", "subreaper"):
        raise ConfigError(f'[run] containment = "{value}": expected "auto" (a cgroup v2 per attempt where one is '
                          'delegated, else a subreaper per attempt) or "subreaper" (never a cgroup)')
    return value


def _redis(t: dict, config_path: Path | None, cli: Overrides, env: dict[str, str]) -> RedisSettings:
    d = RedisSettings()
    url = cli.redis_url or env.get("TRADEUL_MAINT_REDIS_URL") or env.get("REDIS_URL") or \
        _typed(t, "redis", "url", str, None)
    remember_url(url)  # known from now on, so no output of this process shows it, even before it connects
    # The password of `url`, from a file: on no command line and in no environment. In the
    # config file, a relative path is relative to the file's directory.
    password_file = Path(env["TRADEUL_MAINT_REDIS_PASSWORD_FILE"]).expanduser() \
        if env.get("TRADEUL_MAINT_REDIS_PASSWORD_FILE") else None
    if password_file is None and (configured := _typed(t, "redis", "password_file", str, None)):
        base = config_path.resolve().parent if config_path else Path.cwd()
        password_file = base / Path(configured).expanduser()
    prefix = _typed(t, "redis", "key_prefix", str, d.key_prefix)
    if not prefix or any(c.isspace() for c in prefix):
        raise ConfigError(f"[redis] key_prefix = {prefix!r}: must be non-empty without spaces")
    min_replicas = int(_positive("redis", "min_replicas", _typed(t, "redis", "min_replicas", int, d.min_replicas), 0))
    if min_replicas and not url:
        raise ConfigError(f"[redis] min_replicas = {min_replicas}, and no Redis URL is set: the embedded Redis has no "
                          "replicas; set [redis] url (or --redis-url), or min_replicas = 0")
    timeout = float(_positive("redis", "replica_timeout_seconds", _typed(
        t, "redis", "replica_timeout_seconds", (int, float), d.replica_timeout_seconds), 0.001))
    if timeout > MAX_REPLICA_TIMEOUT:
        raise ConfigError(f"[redis] replica_timeout_seconds = {timeout:g}: must be at most {MAX_REPLICA_TIMEOUT:g} "
                          "(WAIT holds its connection, and the tool's commands time out soon after)")
    return RedisSettings(
        url=url or None,
        password_file=password_file,
        key_prefix=prefix,
        status_ttl_days=int(_positive("redis", "status_ttl_days",
                                      _typed(t, "redis", "status_ttl_days", int, d.status_ttl_days), 1, 3650)),
        lock_lease_seconds=_positive("redis", "lock_lease_seconds",
                                     _typed(t, "redis", "lock_lease_seconds", (int, float), d.lock_lease_seconds),
                                     1, 86400),
        min_replicas=min_replicas,
        replica_timeout_seconds=timeout,
        wait_aof=_typed(t, "redis", "wait_aof", bool, d.wait_aof),
    )


def _metrics(t: dict, config_path: Path | None, env: dict[str, str]) -> MetricsSettings:
    pushgateway = _pushgateway(env.get("TRADEUL_MAINT_PUSHGATEWAY") or _typed(t, "metrics", "pushgateway", str, None),
                               "TRADEUL_MAINT_PUSHGATEWAY" if env.get("TRADEUL_MAINT_PUSHGATEWAY") else
                               "[metrics] pushgateway")
    textfile = _typed(t, "metrics", "textfile", str, None)
    if textfile is not None and not textfile.strip():
        raise ConfigError("[metrics] textfile is empty: give a path ending in .prom, or leave the key out")
    if textfile is None:
        return MetricsSettings(pushgateway=pushgateway)
    path = Path(textfile).expanduser()
    if path.suffix != ".prom":
        # node_exporter's textfile collector reads *.prom only: another name is written and never scraped.
        raise ConfigError(f"[metrics] textfile = {textfile!r}: node_exporter reads only files ending in .prom")
    base = config_path.resolve().parent if config_path else Path.cwd()
    return MetricsSettings(textfile=base / path, pushgateway=pushgateway)


def _pushgateway(url: str | None, what: str) -> str | None:
    """http(s)://host[:port][/path], without credentials (a log line names the host only, never the URL)."""
    if url is None:
        return None
    url = url.strip()
    if "@" in url:  # user information, or a password holding a "/" that moved the rest into the path
        shown = re.sub(r"^([\w+.-]*://)?.*@", r"\1***@", url)  # whatever it holds stays out of the message
        raise ConfigError(f"{what} = {shown!r}: credentials in the URL are not supported")
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and \
            not parts.fragment and (parts.port or 0) >= 0 and not any(c.isspace() for c in url)
    except ValueError:  # a port that is not a number
        valid = False
    if not valid:
        raise ConfigError(f"{what} = {url!r}: expected e.g. \"http://pushgateway:9091\"")
    return url.rstrip("/")


def _notify(t: dict, section: str = "notify") -> NotifySettings:
    """`[notify]`, or a job's `[jobs.NAME.notify]` (`section`), which takes [notify]'s values as defaults."""
    d = NotifySettings()
    url = _typed(t, section, "ping_url", str, None)
    if url is not None:
        check_ping_url(url, section)
    timeout = _positive(section, "ping_timeout", _typed(t, section, "ping_timeout", (int, float), d.ping_timeout),
                        0.1)
    return NotifySettings(ping_url=url.rstrip("/") if url else None, ping_timeout=float(timeout))


def check_ping_url(url: str, section: str = "notify") -> None:
    """A URL urllib will send as it is; ConfigError otherwise, showing its host at most: for healthchecks the
    path is the secret that lets anyone ping."""
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # each raises ValueError when it does not parse
    except ValueError:
        raise ConfigError(f"[{section}] ping_url does not parse: check its port (0 to 65535) and the brackets of an "
                          "IPv6 address") from None
    shown = f"{parts.scheme}://{host}/..." if host else "(not shown)"
    if parts.scheme.lower() not in ("http", "https") or not host:
        problem = "expected an http:// or https:// URL with a host"
    elif not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        problem = "it holds a blank, a control or a non-ASCII character: percent-encode it (a blank is %20)"
    else:
        remember(parts.path.strip("/"))  # the secret part: no log line or message shows it, whatever quotes it
        return
    raise ConfigError(f"[{section}] ping_url {shown}: {problem}")


def parse_size(text: str | int) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = SIZE.match(str(text).strip())
    if not match:
        raise ConfigError(f"[logging] rotation = {text!r}: expected a size like \"10 MB\"")
    factor = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[match[2].upper()]
    return int(float(match[1]) * factor)


def _logging(t: dict) -> LoggingSettings:
    d = LoggingSettings()
    directory = _typed(t, "logging", "dir", str, None)
    level = _typed(t, "logging", "level", str, d.level).upper()
    if level not in LEVELS:
        raise ConfigError(f"[logging] level = {level!r}: expected one of {', '.join(LEVELS)}")
    rotation = parse_size(_typed(t, "logging", "rotation", (str, int), d.rotation_bytes))
    if rotation < 1024:
        raise ConfigError(f"[logging] rotation = {t.get('rotation')!r}: must be at least 1 KB")
    return LoggingSettings(
        dir=Path(directory) if directory else None,
        rotation_bytes=rotation,
        retention=int(_positive("logging", "retention", _typed(t, "logging", "retention", int, d.retention), 0)),
        level=level,
    )


def parse_date(value: Any, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        raise ConfigError(f"{what} = {value!r}: expected a date YYYY-MM-DD")
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{what} = {value!r}: expected a date YYYY-MM-DD") from None


def _calendar(t: dict) -> CalendarOverrides:
    closed = _typed(t, "calendar", "closed", list, [])
    extra = _typed(t, "calendar", "sessions", list, [])
    early = _typed(t, "calendar", "early_closes", dict, {})
    early_closes: dict[dt.date, dt.time] = {}
    for key, value in early.items():
        day = parse_date(key, "[calendar] early_closes key")
        match = WALL_TIME.match(str(value))
        if not match:
            raise ConfigError(f"[calendar] early_closes.{key} = {value!r}: expected a local time like \"13:00\"")
        early_closes[day] = dt.time(int(match[1]), int(match[2]))
    closed_days = frozenset(parse_date(v, "[calendar] closed entry") for v in closed)
    extra_days = frozenset(parse_date(v, "[calendar] sessions entry") for v in extra)
    for other, name in ((early_closes.keys(), "an early close"), (extra_days, "an extra session")):
        both = sorted(closed_days & set(other))
        if both:
            raise ConfigError(f"[calendar] {both[0]} is both closed and {name}: keep one")
    warn = _typed(t, "calendar", "expiry_warning_days", int, 30)
    return CalendarOverrides(closed=closed_days, early_closes=early_closes, sessions=extra_days,
                             expiry_warning_days=int(_positive("calendar", "expiry_warning_days", warn, 0)))


def parse_seconds(value: Any, what: str) -> float:
    """A task's duration (timeout, retry_delay, wait_timeout): seconds, or "30m", "2h"; positive, at most
    LONGEST_SECONDS."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value > 0 or math.isinf(value):  # nan compares false: it is no duration either
            raise ConfigError(f"{what} = {value}: must be a positive number of seconds")
        seconds = value
    else:
        match = DURATION.match(str(value).strip())
        if not match or int(match[1]) <= 0:
            raise ConfigError(f"{what} = {value!r}: expected seconds or a duration like \"30m\" or \"2h\"")
        seconds = int(match[1]) * {"s": 1, None: 1, "m": 60, "h": 3600}[match[2]]
    if seconds > LONGEST_SECONDS:
        raise ConfigError(f"{what} = {value!r}: must be at most {LONGEST_SECONDS} seconds (366 days)")
    return float(seconds)


def _tasks(raw: Any, require_tasks: bool, where: str = "") -> tuple[TaskSpec, ...]:
    """`[[tasks]]`, or a job's `[[jobs.NAME.tasks]]` (`where` "jobs.NAME.", which every message names)."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}tasks must be written as [[{where}tasks]] tables")
    if not raw and require_tasks:
        raise ConfigError("no tasks configured: add at least one [[tasks]] table (or a [jobs.NAME] with tasks)")
    tasks: list[TaskSpec] = []
    for index, t in enumerate(raw, start=1):
        if not isinstance(t, dict):
            raise ConfigError(f"{where}task #{index} must be a table")
        name = t.get("name")
        _only(t, "tasks", None, f"in {where}task {name!r}" if isinstance(name, str) and name else
              f"in {where}task #{index}")
        if not isinstance(name, str) or not TASK_NAME.match(name):
            raise ConfigError(f"{where}task #{index}: name = {name!r}: expected lowercase letters, digits, '_' or '-'")
        tasks.append(_task(t, name, f"{where}tasks.{name}"))
    _check_graph(tasks, where)
    check_catchup(tasks, where)
    return tuple(tasks)


def _task(t: dict, name: str, section: str) -> TaskSpec:
    kinds = [k for k in ("command", "python", "builtin") if k in t]
    if len(kinds) != 1:
        raise ConfigError(f"[{section}] needs exactly one of command, python or builtin (has {kinds or 'none'})")
    command = _argv(t, section, "command")
    python = _typed(t, section, "python", str, None)
    if python is not None and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", python):
        raise ConfigError(f"[{section}] python = {python!r}: expected \"package.module:callable\"")
    builtin = _typed(t, section, "builtin", str, None)
    params = _typed(t, section, "params", dict, {})
    if builtin is not None:
        from tradeul_maint.builtins import validate_builtin  # the registry lives beside the builtins

        validate_builtin(builtin, params, section)
    after = _typed(t, section, "after", list, [])
    if not all(isinstance(a, str) for a in after):
        raise ConfigError(f"[{section}] after must be a list of task names")
    catchup = _typed(t, section, "catchup", str, "all")
    if catchup not in ("all", "latest"):
        raise ConfigError(f"[{section}] catchup = {catchup!r}: expected \"all\" or \"latest\"")
    retries = _typed(t, section, "retries", int, 0)
    if retries < 0:
        raise ConfigError(f"[{section}] retries = {retries}: must be 0 or more")
    wait_for = _argv(t, section, "wait_for")
    if "wait_timeout" in t and wait_for is None:
        raise ConfigError(f"[{section}] wait_timeout without wait_for: it bounds how long the task waits for the "
                          "data its wait_for probe looks for")
    return TaskSpec(
        name=name,
        command=command,
        python=python,
        builtin=builtin,
        params=params,
        after=tuple(after),
        timeout=_timeout(t, section),
        retries=retries,
        retry_delay=parse_seconds(t["retry_delay"], f"[{section}] retry_delay") if "retry_delay" in t else 30.0,
        catchup=catchup,
        market_closed_only=_typed(t, section, "market_closed_only", bool, False),
        wait_for=wait_for,
        wait_timeout=parse_seconds(t["wait_timeout"], f"[{section}] wait_timeout") if "wait_timeout" in t else None,
        redis_env=_typed(t, section, "redis_env", bool, False),
    )


def _argv(t: dict, section: str, key: str) -> tuple[str, ...] | None:
    """A `command` or `wait_for`: a non-empty list of non-empty strings, run without a shell."""
    if key not in t:
        return None
    argv = t[key]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise ConfigError(f"[{section}] {key} must be a non-empty list of strings (argv, no shell)")
    return tuple(argv)


def _timeout(t: dict, section: str) -> float | None:
    """The task's `timeout`: DEFAULT_TASK_TIMEOUT when it is left out, none when it is 0."""
    if "timeout" not in t:
        return DEFAULT_TASK_TIMEOUT
    if t["timeout"] in (0, "0") and not isinstance(t["timeout"], bool):
        return None
    return parse_seconds(t["timeout"], f"[{section}] timeout")


def _protect_own_keys(jobs: tuple[Job, ...], redis: RedisSettings) -> None:
    """A delete pattern on the maintenance Redis that could match one of the tool's keys, any job's, is refused.

    An early, clear error: the guarantee is at run time, where `redis.delete_keys` skips
    every key under every job's prefix whatever its pattern and target (builtins.py).
    """
    from tradeul_maint.keys import Keys
    from tradeul_maint.redisglob import can_match_key_starting_with

    namespaces = dict.fromkeys(Keys(p).namespace for p in (redis.key_prefix, *(j.key_prefix for j in jobs)))
    for job in jobs:
        where = "" if job.name == MAIN_JOB else f"jobs.{job.name}."
        for task in job.tasks:
            if task.builtin != "redis.delete_keys" or task.params.get("url"):
                continue
            for pattern in task.params.get("patterns", []):
                for namespace in namespaces:
                    if can_match_key_starting_with(pattern, namespace):
                        raise ConfigError(f"[{where}tasks.{task.name}] params.patterns: {pattern!r} would delete "
                                          f"this tool's own state (it can match keys under {namespace}, the status "
                                          "documents and the lock): narrow the pattern")


def check_catchup(tasks: list[TaskSpec] | tuple[TaskSpec, ...], where: str = "") -> None:
    """A task run for every session must not wait for one run only for the newest.

    For an older session the "latest" task is skipped, so the dependent could never run
    there and the session could never be done: refused here, with what to write instead.
    Checking the direct edges is enough: any chain from an "all" task to a "latest" one
    has such an edge where it first reaches a "latest" task. The other direction ("latest"
    after "all", a snapshot after the loads) is valid.
    """
    policy = {t.name: t.catchup for t in tasks}
    for task in tasks:
        for dep in task.after:
            if task.catchup == "all" and policy.get(dep) == "latest":
                raise ConfigError(f"[{where}tasks.{task.name}] after = {list(task.after)}: {task.name} runs for every "
                                  f"session (catchup = \"all\") but {dep} only for the newest (catchup = "
                                  f"\"latest\"), so older sessions could never run {task.name}: set catchup = "
                                  f"\"latest\" on {task.name} too, or drop {dep} from its after")


def _check_graph(tasks: list[TaskSpec], where: str = "") -> None:
    names: set[str] = set()
    for task in tasks:
        if task.name in names:
            raise ConfigError(f"duplicate task name '{task.name}'{' in [' + where.rstrip('.') + ']' if where else ''}: "
                              "task names must be unique")
        names.add(task.name)
    for task in tasks:
        for dep in task.after:
            if dep not in names:
                raise ConfigError(f"[{where}tasks.{task.name}] after = {list(task.after)}: unknown task '{dep}'")
            if dep == task.name:
                raise ConfigError(f"[{where}tasks.{task.name}] depends on itself")
    # Depth-first search for a cycle, reporting the path an operator has to break.
    after = {t.name: t.after for t in tasks}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in after[name]:
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [name, dep]
                raise ConfigError(f"dependency cycle: {' -> '.join(cycle)}: remove one 'after' entry")
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in after:
        if name not in state:
            visit(name, [name])
