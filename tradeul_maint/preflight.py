"""`check`: a preflight, like `nginx -t`: everything a run at 17:00 will need, tried now.

A run finds most problems only when it gets to them: a task module that does not import
on the host's Python path, a program missing from cron's PATH, a Redis user that may read
but not write. Each check here does what the run will do, as far as it can without
touching the state: it connects and authenticates as the run will, writes and deletes a
throwaway key under the tool's prefix (SET NX with a 10 s expiry, so it can neither clobber
nor outlive anything), reads the type of every key of the lookback, counts the replicas the
primary sees and, with `[redis] min_replicas`, waits for them after a test write as a run
does, reads the eviction policy (one that can evict the tool's keys fails), compares this
host's task list with the one the newest session ran with, imports every `python` task from
`Settings.python_paths`, resolves every `command` program on this process's PATH, and
picks the log directory as the run will. Importing a task module runs its top-level code,
as the run's import would.

The result is one `Check` per line. A configuration that does not load leaves nothing
else to check: the report then holds that one failed check and the error (`fatal`).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis

from tradeul_maint import core, planner
from tradeul_maint.calendar import cache_name
from tradeul_maint.errors import ConfigError, MaintError, TaskLoadError
from tradeul_maint.keys import Keys
from tradeul_maint.replicas import primary_for, seen_replicas
from tradeul_maint.settings import Overrides, Settings, TaskSpec, load_settings
from tradeul_maint.sources import sources
from tradeul_maint.store import StateStore

TEST_WRITE_MS = 10_000


@dataclass(frozen=True)
class Check:
    name: str  # what was checked: "config", "redis", "redis write", "key types", "task NAME", ...
    ok: bool
    detail: str  # what was found, or what to fix
    warning: bool = False  # passed, but worth a look (the window at risk, the plan's shape): never a failure


@dataclass(frozen=True)
class Report:
    config: str | None  # the configuration file in use; None when it did not load
    redis: str | None  # where Redis is: the URL with its password hidden, or the embedded server's directory
    checks: tuple[Check, ...]
    fatal: MaintError | None = None  # the configuration did not load: nothing else was checked

    @property
    def ok(self) -> bool:
        return self.fatal is None and all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def warned(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.ok and c.warning)

    def to_json(self) -> dict:
        return {"ok": self.ok, "config": self.config, "redis": self.redis,
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "warning": c.warning}
                           for c in self.checks]}


def run(overrides: Overrides, now_text: str | None) -> Report:
    """Every check, in the order a run meets them; a bad `--now` raises UsageError."""
    try:
        settings = load_settings(overrides)
        context = core.prepare(settings, now_text)
    except ConfigError as exc:
        return Report(None, None, (Check("config", False, str(exc)),), fatal=exc)
    s = context.settings
    found = sources(s)
    several = len(s.jobs) > 1
    if several:
        counts = ", ".join(f"{j.name}: {len(j.tasks)} task{'s' if len(j.tasks) != 1 else ''}" for j in s.jobs)
        checks = [Check("config", True, f"{found.config or 'no config file: defaults'}: {len(s.jobs)} jobs "
                                        f"({counts}), calendar {s.schedule.calendar}")]
    else:
        checks = [Check("config", True, f"{found.config or 'no config file: defaults'}: {len(s.tasks)} tasks, "
                                        f"calendar {s.schedule.calendar}, window {s.schedule.window_start} for "
                                        f"{s.schedule.window_minutes} min")]
    jobs = [(job, context.for_job(job), f"{job.name} " if several else "") for job in s.jobs]
    checks += redis_checks(context, found.redis, [(c, label) for _, c, label in jobs])
    checks += [task_check(task, c.settings, label) for _, c, label in jobs for task in c.settings.tasks]
    for _, c, label in jobs:
        checks += plan_checks(c.settings, label)
    checks += shared_ping_checks(s)
    checks += [log_dir_check(s), calendar_check(context)]
    checks += [next_window_check(c, label) for _, c, label in jobs]
    checks.append(containment_check(s))
    return Report(found.config, found.redis, tuple(checks))


def plan_checks(settings: Settings, label: str = "") -> list[Check]:
    """Each task's policy and dependencies as the planner reads them (one line), then a warning per shape
    an operator could misread; a warning does not fail `check`. `label` names the job when there are several,
    with its window and catch-up policy."""
    job = f"{planner.explain_job(settings.schedule)}; " if label else ""
    return [Check(f"{label}plan", True, job + planner.explain(settings.tasks))] + \
        [Check(f"{label}plan {task}", True, text, warning=True)
         for task, text in planner.shape_warnings(settings.tasks)]


def shared_ping_checks(settings: Settings) -> list[Check]:
    """A warning when jobs ping one URL: one job's success ping would clear another's failure."""
    by_url: dict[str, list[str]] = {}
    for job in settings.jobs:
        if job.notify.ping_url:
            by_url.setdefault(job.notify.ping_url, []).append(job.name)
    return [Check("pings", True, f"jobs {', '.join(names)} ping the same URL: one's success ping clears another's "
                                 "failure; give each job its own [jobs.NAME.notify] ping_url", warning=True)
            for names in by_url.values() if len(names) > 1]


def containment_check(settings: Settings) -> Check:
    """What keeps each attempt's processes together on this host (see containment.py): informative, never failing."""
    from tradeul_maint.containment import detect

    return Check("containment", True, detect(settings.run.containment).describe())


def redis_checks(context: core.Context, where: str,
                 jobs: list[tuple[core.Context, str]] | None = None) -> list[Check]:
    """Reachable and authenticated (the connection), writable (a throwaway key), and the type of every key of
    every job (`jobs`: each job's context and label), and each job's deadline."""
    jobs = jobs if jobs is not None else [(context, "")]
    try:
        with core.connected(context) as store:  # as every command connects: password file, cluster prefix
            stores = [(job, store.job(job.settings.key_prefix), label) for job, label in jobs]
            return [Check("redis", True, f"{where}: reachable, authenticated"),
                    _write_check(store.client, store.keys),
                    *(_key_types_check(job, job_store, label) for job, job_store, label in stores),
                    _replicas_check(store), _eviction_check(store),
                    *(check(job, job_store, label) for job, job_store, label in stores
                      for check in (_task_list_check, _deadline_check))]
    except MaintError as exc:
        skipped = "not checked: no connection to Redis"
        return [Check("redis", False, str(exc)), Check("redis write", False, skipped),
                *(Check(f"{label}key types", False, skipped) for _, label in jobs),
                Check("replicas", False, skipped), Check("eviction", False, skipped),
                *(Check(f"{label}{name}", False, skipped) for _, label in jobs for name in ("task list", "deadline"))]


def _write_check(client: redis.Redis, keys: Keys) -> Check:
    key = keys.check(uuid.uuid4().hex)
    try:
        created = client.set(key, "1", nx=True, px=TEST_WRITE_MS)
        deleted = client.delete(key)
    except (redis.RedisError, OSError) as exc:
        return Check("redis write", False, f"SET {key} failed: {type(exc).__name__}: {str(exc).strip()} (a "
                                           "replica, a full server, or a user without write permission on the "
                                           "prefix?)")
    if not created or not deleted:
        return Check("redis write", False, f"SET NX {key} did not create the key it then deleted")
    return Check("redis write", True, f"wrote and deleted {key}")


def _key_types_check(context: core.Context, store: StateStore, label: str = "") -> Check:
    s = context.settings
    try:
        sessions = planner.sessions_in_view(context.now, context.calendar, s.schedule)
    except MaintError:
        sessions = []  # the calendar ends before today: the calendar check says so
    try:
        store.check_key_types(sessions)
    except MaintError as exc:
        return Check(f"{label}key types", False, str(exc))
    except (redis.RedisError, OSError) as exc:
        return Check(f"{label}key types", False, f"TYPE failed: {str(exc).strip() or type(exc).__name__}")
    return Check(f"{label}key types", True, f"the lock, last_run and the keys of {len(sessions)} sessions under "
                                            f"{s.key_prefix}: hold their own types or are absent")


def _replicas_check(store: StateStore) -> Check:
    """The replicas the primary sees against [redis] min_replicas; with it (or wait_aof), a test write waited for."""
    replication = store.replication
    seen = seen_replicas(primary_for(store.client, store.keys.lock))
    if not replication.waits:
        return Check("replicas", True, f"{seen}; min_replicas = 0: writes do not wait for replicas (a failover "
                                       "can lose the last ones)")
    key = store.keys.check(uuid.uuid4().hex)
    try:
        replication.write(store.client, key, lambda c: c.set(key, "1", nx=True, px=TEST_WRITE_MS), "a test write")
        store.client.delete(key)
    except (MaintError, redis.RedisError, OSError) as exc:
        return Check("replicas", False, f"{str(exc).strip() or type(exc).__name__}; every run would stop (exit 75) "
                                        "before its first task")
    if replication.wait_aof and not replication.aof_supported:
        return Check("replicas", True, f"{seen}; wait_aof = true, but this Redis has no WAITAOF (7.2+): WAIT alone "
                                       "confirms each write; upgrade Redis or set wait_aof = false", warning=True)
    waits = " and ".join(w for w, on in (("WAIT", replication.min_replicas), ("WAITAOF", replication.wait_aof)) if on)
    return Check("replicas", True, f"{seen}; min_replicas = {replication.min_replicas}: a test write was confirmed "
                                   f"by {waits} within {replication.timeout_seconds:g} s")


# Under a maxmemory limit, every policy but noeviction may delete keys to make room; the volatile-* ones
# only keys with a TTL, and the lock, the status documents and the executed flags all have one.
SAFE_POLICIES = ("noeviction",)


def _eviction_check(store: StateStore) -> Check:
    try:
        memory = primary_for(store.client, store.keys.lock).info("memory")
    except redis.RedisError as exc:
        return Check("eviction", True, f"not checked: INFO memory failed ({str(exc).strip() or type(exc).__name__}); "
                                       "maxmemory-policy must be noeviction")
    limit, policy = int(memory.get("maxmemory") or 0), str(memory.get("maxmemory_policy", "?"))
    if not limit:
        return Check("eviction", True, f"no maxmemory: nothing is evicted (maxmemory-policy {policy})")
    if policy in SAFE_POLICIES:
        return Check("eviction", True, f"maxmemory {memory.get('maxmemory_human', limit)} with {policy}: a full "
                                       "Redis refuses writes (exit 75) rather than evict")
    return Check("eviction", True, f"maxmemory {memory.get('maxmemory_human', limit)} with maxmemory-policy "
                                   f"{policy} can evict the tool's keys (the lock, status documents and executed "
                                   "flags carry a TTL, so volatile-* policies evict them too): a session could run "
                                   "again, two runs could hold the lock; set maxmemory-policy noeviction, or give "
                                   "the tool a Redis of its own", warning=True)


def _task_list_check(context: core.Context, store: StateStore, label: str = "") -> Check:
    """This host's tasks against the task list of the newest session that recorded one (tasklist.py)."""
    import socket

    from tradeul_maint.tasklist import differences, summary, task_list

    try:
        sessions = planner.sessions_in_view(context.now, context.calendar, context.settings.schedule)
        statuses = store.statuses(sessions)
    except (MaintError, redis.RedisError, OSError) as exc:
        return Check(f"{label}task list", True, f"not checked: {str(exc).strip() or type(exc).__name__}")
    recorded = [(d, s) for d, s in sorted(statuses.items(), reverse=True)
                if s is not None and s.corrupt is None and s.task_list is not None]
    if not recorded:
        return Check(f"{label}task list", True, "no session in the lookback records its task list yet")
    session, status = recorded[0]
    diffs = differences(task_list(context.settings.tasks), status.task_list)
    host = (status.runner or "").rpartition(":")[0]
    state = "completed" if status.finished else "running or interrupted"
    if not diffs:
        return Check(f"{label}task list", True, f"the same as the cycle of {session} ({state}, host {host or '?'})")
    if host == socket.gethostname():
        return Check(f"{label}task list", True, f"changed here since the cycle of {session} ({state}): "
                                        + summary(diffs, status.runner).partition(": ")[2])
    return Check(f"{label}task list", True, f"the cycle of {session} ({state}) {summary(diffs, status.runner)}: roll "
                                    "one configuration out to every host", warning=True)


def _deadline_check(context: core.Context, store: StateStore, label: str = "") -> Check:
    """The window at risk, as `status` estimates it from the lookback's durations: a warning, not a failure."""
    from tradeul_maint.trends import window_risk

    try:
        sessions = planner.sessions_in_view(context.now, context.calendar, context.settings.schedule)
        risk = window_risk(context.settings, store.statuses(sessions))
    except MaintError as exc:
        return Check(f"{label}deadline", False, f"not checked: {exc}")
    except (redis.RedisError, OSError) as exc:
        return Check(f"{label}deadline", False, f"not checked: reading the lookback failed: {str(exc).strip()}")
    if risk is None:
        return Check(f"{label}deadline", True, "no tasks")
    return Check(f"{label}deadline", True, risk.message(), warning=risk.at_risk)


def task_check(task: TaskSpec, settings: Settings, label: str = "") -> Check:
    name = f"{label}task {task.name}"
    if task.wait_for:
        found, detail = find_program(task.wait_for[0])
        if not found:
            return Check(name, False, f"wait_for {task.wait_for[0]}: {detail}")
    if task.python:
        try:
            from tradeul_maint.tasks import load_callable

            load_callable(task.python, settings.python_paths)
        except TaskLoadError as exc:
            return Check(name, False, f"python {exc}")
        return Check(name, True, f"python {task.python}: imports, callable")
    if task.command:
        program = task.command[0]
        found, detail = find_program(program)
        return Check(name, found, f"command {program}: {detail}")
    return Check(name, True, f"builtin {task.builtin}")


def find_program(program: str) -> tuple[bool, str]:
    """Whether `program` (argv[0] of a command task) can be executed as the run will: a path, or looked up on PATH."""
    if os.sep in program:
        path = Path(program)
        if not path.is_absolute():
            return False, ("a relative path depends on the working directory, which cron does not set: give "
                           "an absolute path or a program on PATH")
        if not path.is_file():
            return False, "no such file"
        if not os.access(path, os.X_OK):
            return False, "not executable (chmod +x, or run it through its interpreter)"
        return True, "executable"
    found = shutil.which(program)
    if found is None:
        return False, f"not found on PATH ({os.environ.get('PATH', '')}): give an absolute path or set PATH"
    return True, found


def log_dir_check(settings: Settings) -> Check:
    from tradeul_maint.logs import choose_log_dir, fallback_log_dir, log_dir_for

    preferred = log_dir_for(settings)
    try:
        chosen = choose_log_dir(preferred, fallback_log_dir(settings))
    except ConfigError as exc:
        return Check("log dir", False, str(exc))
    if chosen.fallback_reason:
        return Check("log dir", True, f"{preferred} is not writable ({chosen.fallback_reason}): logs go to "
                                      f"the fallback {chosen.path}")
    return Check("log dir", True, f"{chosen.path}: writable")


def calendar_check(context: core.Context) -> Check:
    cal, now = context.calendar, context.now
    last = cal.library_last_session
    days_left = (last - cal.local_date(now)).days
    if days_left < 0:
        return Check("calendar", False, f"the {cal.code} calendar of exchange-calendars {cal.version} ended on "
                                        f"{last}: run exits 69 until exchange-calendars is upgraded")
    if warning := cal.expiry_warning(now):
        return Check("calendar", False, warning)
    prebuilt = context.settings.calendar_cache
    if prebuilt is not None and not (cal.source and Path(cal.source).parent == prebuilt):
        return Check("calendar", False, f"the prebuilt cache in {prebuilt} (TRADEUL_MAINT_CALENDAR_CACHE) is not "
                                        f"used: missing, of another exchange-calendars version than {cal.version}, "
                                        "or ending within expiry_warning_days; a tick with an empty state "
                                        "directory rebuilds the calendar each time: run calendar --write-cache "
                                        f"{prebuilt} (rebuild the image)")
    cache = context.settings.state_dir / "cache" / cache_name(cal.code, cal.version)
    if not cal.source and not cache.exists():
        return Check("calendar", False, f"cannot write the calendar cache {cache} (full disk, read-only state "
                                        "directory?): every run builds the calendar again (about 0.8 s and "
                                        "90 MB); free the space or set TRADEUL_MAINT_CALENDAR_CACHE")
    source = f"read from {cal.source}" if cal.source else "built from the library (no current cache)"
    return Check("calendar", True, f"{cal.code} of exchange-calendars {cal.version} reaches {last} ({days_left} "
                                   f"days ahead); {source}")


def next_window_check(context: core.Context, label: str = "") -> Check:
    from tradeul_maint.overview import next_window

    window = next_window(context.now, context.calendar, context.settings)
    if window is None:
        return Check(f"{label}next window", False, "none: the calendar ends; upgrade exchange-calendars")
    tz = context.calendar.tz
    local = f"{window.start.astimezone(tz):%Y-%m-%d %H:%M}-{window.end.astimezone(tz):%H:%M} {tz.key}"
    state = "open now" if window.contains(context.now) else f"opens in {_until(window.start - context.now)}"
    return Check(f"{label}next window", True, f"session {window.session}: {local} ({window.start:%H:%M}-"
                                              f"{window.end:%H:%M} UTC), {state}")


def _until(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours // 24}d {hours % 24}h" if hours >= 24 else f"{hours}h{minutes:02d}m"


def unloadable_tasks(settings: Settings) -> list[Check]:
    """The `python` tasks that do not import or are not callable: what `run --dry-run` adds to its plan."""
    return [c for c in (task_check(t, settings) for job in settings.jobs for t in job.tasks if t.python)
            if not c.ok]

