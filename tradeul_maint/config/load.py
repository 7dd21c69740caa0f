"""Loading the settings: command-line option > environment variable > TOML file > default, each section read and
checked once (the values in values.py, the tasks in tasks.py), into settings.py's dataclasses."""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tradeul_maint.base import envvars
from tradeul_maint.base.errors import ConfigError
from tradeul_maint.base.redact import remember_url
from tradeul_maint.config.settings import (CATCHUP, DEFAULT_CONFIG_PATHS, LEVELS, LONGEST_SECONDS, MAIN_JOB,
                                           MAX_REPLICA_TIMEOUT, RESERVED_JOB_NAMES, CalendarOverrides, Job,
                                           LoggingSettings, MetricsSettings, NotifySettings, Overrides, RedisSettings,
                                           RunSettings, ScheduleSettings, Settings, TaskSpec, _containment)
from tradeul_maint.config.tasks import TASK_NAME, protect_own_keys, read_tasks
from tradeul_maint.config.values import (JOB_KEYS, KNOWN_KEYS, WALL_TIME, check_ping_url, only_keys, parse_date,
                                         parse_size, parse_window_start, positive, table, typed)


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
    elif env.get(envvars.CONFIG):
        explicit = Path(env[envvars.CONFIG])
        given = f"{envvars.CONFIG}={explicit}"
    else:
        return next((p for p in DEFAULT_CONFIG_PATHS if p.is_file()), None)
    if explicit.is_dir():
        raise ConfigError(f"{given} is a directory: give the config file itself "
                          f"(e.g. {explicit / 'maint.toml'})")
    if not explicit.is_file():
        raise ConfigError(f"config file {explicit} does not exist ({given})")
    return explicit


def _build(raw: dict, path: Path | None, cli: Overrides, env: dict[str, str], require_tasks: bool) -> Settings:
    only_keys(raw, "", {"schedule", "run", "redis", "logging", "calendar", "metrics", "notify", "tasks", "jobs"})
    schedule = _schedule(table(raw, "schedule"))
    run = _run(table(raw, "run"), path)
    redis = _redis(table(raw, "redis"), path, cli, env)
    logging = _logging(table(raw, "logging"))
    calendar = _calendar(table(raw, "calendar"))
    notify = _notify(table(raw, "notify"))
    jobs_table = raw.get("jobs", {})
    if not isinstance(jobs_table, dict):
        raise ConfigError("jobs must be written as [jobs.NAME] tables")
    tasks = read_tasks(raw.get("tasks", []), require_tasks and not jobs_table)
    jobs = _jobs(jobs_table, schedule, tasks, redis, notify, require_tasks)
    protect_own_keys(jobs, redis)
    state_dir = cli.state_dir or (Path(env[envvars.STATE_DIR]) if env.get(envvars.STATE_DIR) else None)
    if state_dir is None:
        xdg = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "state")
        state_dir = Path(xdg) / "tradeul-maint"
    log_dir = cli.log_dir or (Path(env[envvars.LOG_DIR]) if env.get(envvars.LOG_DIR) else None)
    calendar_cache = env.get(envvars.CALENDAR_CACHE)
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
        metrics=_metrics(table(raw, "metrics"), path, env),
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
        only_keys(t, section, JOB_KEYS)
        job_tasks = read_tasks(t.get("tasks", []), False, f"{section}.")
        if not job_tasks and require_tasks:
            raise ConfigError(f"[{section}] has no tasks: add at least one [[{section}.tasks]] table")
        prefix = typed(t, section, "key_prefix", str, f"{redis.key_prefix}:{name}")
        if not prefix or any(c.isspace() for c in prefix):
            raise ConfigError(f"[{section}] key_prefix = {prefix!r}: must be non-empty without spaces")
        own = t.get("notify", {})
        if not isinstance(own, dict):
            raise ConfigError(f"[{section}.notify] must be a table")
        only_keys(own, f"{section}.notify", KNOWN_KEYS["notify"])
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


def _schedule(t: dict, section: str = "schedule", d: ScheduleSettings = ScheduleSettings()) -> ScheduleSettings:
    """`[schedule]`, or a job's schedule keys (`section` "jobs.NAME", defaults `d` from [schedule])."""
    calendar = typed(t, section, "calendar", str, d.calendar).strip()
    if not calendar:
        raise ConfigError("[schedule] calendar is empty: give an exchange-calendars code such as \"XNYS\"")
    window_start = parse_window_start(typed(t, section, "window_start", str, str(d.window_start)), section) \
        if "window_start" in t else d.window_start
    window_minutes = typed(t, section, "window_minutes", int, d.window_minutes)
    if not 1 <= window_minutes <= 24 * 60:
        raise ConfigError(f"[{section}] window_minutes = {window_minutes}: must be between 1 and 1440")
    catchup = typed(t, section, "catchup", str, d.catchup)
    if catchup not in CATCHUP:
        raise ConfigError(f"[{section}] catchup = {catchup!r}: expected \"all\" (every missed session, oldest "
                          "first), \"latest\" (only the newest) or \"none\" (a missed window expires)")
    return ScheduleSettings(
        calendar=calendar.upper() if calendar.isalpha() else calendar,
        window_start=window_start,
        window_minutes=window_minutes,
        lookback_sessions=int(positive(section, "lookback_sessions",
                                        typed(t, section, "lookback_sessions", int, d.lookback_sessions))),
        auto_recover=typed(t, section, "auto_recover", bool, d.auto_recover),
        recover_during_market_hours=typed(t, section, "recover_during_market_hours", bool,
                                           d.recover_during_market_hours),
        deadline_minutes=d.deadline_minutes if "deadline_minutes" not in t else
        int(positive(section, "deadline_minutes", typed(t, section, "deadline_minutes", int, None), 1,
                      LONGEST_SECONDS / 60)),
        catchup=catchup,
    )


def _run(t: dict, config_path: Path | None) -> RunSettings:
    d = RunSettings()
    paths = typed(t, "run", "pythonpath", list, [])
    if not all(isinstance(p, str) and p for p in paths):
        raise ConfigError("[run] pythonpath must be a list of directories (relative to the config file)")
    base = config_path.resolve().parent if config_path else Path.cwd()
    return RunSettings(
        pythonpath=tuple((base / Path(p).expanduser()).resolve() for p in paths),
        max_parallel=int(positive("run", "max_parallel", typed(t, "run", "max_parallel", int, d.max_parallel))),
        max_attempts=int(positive("run", "max_attempts", typed(t, "run", "max_attempts", int, d.max_attempts))),
        retry_backoff_minutes=positive("run", "retry_backoff_minutes",
                                        typed(t, "run", "retry_backoff_minutes", (int, float),
                                               d.retry_backoff_minutes), 0, LONGEST_SECONDS / 60),
        slow_factor=float(positive("run", "slow_factor", typed(t, "run", "slow_factor", (int, float),
                                                                 d.slow_factor), 1)),
        slow_min_seconds=float(positive("run", "slow_min_seconds", typed(
            t, "run", "slow_min_seconds", (int, float), d.slow_min_seconds), 0)),
        stop_grace_seconds=float(positive("run", "stop_grace_seconds", typed(
            t, "run", "stop_grace_seconds", (int, float), d.stop_grace_seconds), 0.1)),
        max_run_minutes=_max_run_minutes(typed(t, "run", "max_run_minutes", (int, float), d.max_run_minutes)),
        containment=_containment(typed(t, "run", "containment", str, d.containment)),
    )


def _max_run_minutes(value: float) -> float | None:
    """0 is no limit; anything else must leave a run time to start its tasks (and a test time to stop one)."""
    if value == 0:
        return None
    return float(positive("run", "max_run_minutes", value, 0.01))


def _redis(t: dict, config_path: Path | None, cli: Overrides, env: dict[str, str]) -> RedisSettings:
    d = RedisSettings()
    url = cli.redis_url or env.get(envvars.REDIS_URL) or env.get(envvars.GENERIC_REDIS_URL) or \
        typed(t, "redis", "url", str, None)
    remember_url(url)  # known from now on, so no output of this process shows it, even before it connects
    # The password of `url`, from a file: on no command line and in no environment. In the
    # config file, a relative path is relative to the file's directory.
    password_file = Path(env[envvars.REDIS_PASSWORD_FILE]).expanduser() \
        if env.get(envvars.REDIS_PASSWORD_FILE) else None
    if password_file is None and (configured := typed(t, "redis", "password_file", str, None)):
        base = config_path.resolve().parent if config_path else Path.cwd()
        password_file = base / Path(configured).expanduser()
    prefix = typed(t, "redis", "key_prefix", str, d.key_prefix)
    if not prefix or any(c.isspace() for c in prefix):
        raise ConfigError(f"[redis] key_prefix = {prefix!r}: must be non-empty without spaces")
    min_replicas = int(positive("redis", "min_replicas", typed(t, "redis", "min_replicas", int, d.min_replicas), 0))
    if min_replicas and not url:
        raise ConfigError(f"[redis] min_replicas = {min_replicas}, and no Redis URL is set: the embedded Redis has no "
                          "replicas; set [redis] url (or --redis-url), or min_replicas = 0")
    timeout = float(positive("redis", "replica_timeout_seconds", typed(
        t, "redis", "replica_timeout_seconds", (int, float), d.replica_timeout_seconds), 0.001))
    if timeout > MAX_REPLICA_TIMEOUT:
        raise ConfigError(f"[redis] replica_timeout_seconds = {timeout:g}: must be at most {MAX_REPLICA_TIMEOUT:g} "
                          "(WAIT holds its connection, and the tool's commands time out soon after)")
    return RedisSettings(
        url=url or None,
        password_file=password_file,
        key_prefix=prefix,
        status_ttl_days=int(positive("redis", "status_ttl_days",
                                      typed(t, "redis", "status_ttl_days", int, d.status_ttl_days), 1, 3650)),
        lock_lease_seconds=positive("redis", "lock_lease_seconds",
                                     typed(t, "redis", "lock_lease_seconds", (int, float), d.lock_lease_seconds),
                                     1, 86400),
        min_replicas=min_replicas,
        replica_timeout_seconds=timeout,
        wait_aof=typed(t, "redis", "wait_aof", bool, d.wait_aof),
    )


def _metrics(t: dict, config_path: Path | None, env: dict[str, str]) -> MetricsSettings:
    pushgateway = _pushgateway(env.get(envvars.PUSHGATEWAY) or typed(t, "metrics", "pushgateway", str, None),
                               envvars.PUSHGATEWAY if env.get(envvars.PUSHGATEWAY) else
                               "[metrics] pushgateway")
    textfile = typed(t, "metrics", "textfile", str, None)
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
    url = typed(t, section, "ping_url", str, None)
    if url is not None:
        check_ping_url(url, section)
    timeout = positive(section, "ping_timeout", typed(t, section, "ping_timeout", (int, float), d.ping_timeout),
                        0.1)
    return NotifySettings(ping_url=url.rstrip("/") if url else None, ping_timeout=float(timeout))


def _logging(t: dict) -> LoggingSettings:
    d = LoggingSettings()
    directory = typed(t, "logging", "dir", str, None)
    level = typed(t, "logging", "level", str, d.level).upper()
    if level not in LEVELS:
        raise ConfigError(f"[logging] level = {level!r}: expected one of {', '.join(LEVELS)}")
    rotation = parse_size(typed(t, "logging", "rotation", (str, int), d.rotation_bytes))
    if rotation < 1024:
        raise ConfigError(f"[logging] rotation = {t.get('rotation')!r}: must be at least 1 KB")
    return LoggingSettings(
        dir=Path(directory) if directory else None,
        rotation_bytes=rotation,
        retention=int(positive("logging", "retention", typed(t, "logging", "retention", int, d.retention), 0)),
        level=level,
    )


def _calendar(t: dict) -> CalendarOverrides:
    closed = typed(t, "calendar", "closed", list, [])
    extra = typed(t, "calendar", "sessions", list, [])
    early = typed(t, "calendar", "early_closes", dict, {})
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
    warn = typed(t, "calendar", "expiry_warning_days", int, 30)
    return CalendarOverrides(closed=closed_days, early_closes=early_closes, sessions=extra_days,
                             expiry_warning_days=int(positive("calendar", "expiry_warning_days", warn, 0)))
