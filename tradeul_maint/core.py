"""The commands' work without the command line: load, plan, lock, run, report.

Each function takes settings and plain values and returns a report for the CLI to render;
failures are MaintError subclasses that the CLI turns into exit codes.

Every command works job by job (settings.Job): `run`, `recover` and `status` apply the one
planner to each job named with --job (all of them by default), in configuration order, each
under its own lock and on its own keys, over one connection. A job whose lock is busy, or
whose run fails, does not stop the next; a signal or a lost Redis stops them all.

The cron tick with nothing to do (`quiet_tick`) needs only settings, the calendar, Redis
and the planner, and must not pay for more (see cli.py): the runner, the lock, the status
view and loguru are imported by the functions that use them.
"""

from __future__ import annotations

import datetime as dt
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterator

import redis

from tradeul_maint import planner
from tradeul_maint.calendar import TradingCalendar, load_calendar
from tradeul_maint.connection import open_redis
from tradeul_maint.errors import (ConfigError, LockBusyError, MaintError, RedisRefusedWriteError,
                                  RedisUnavailableError, UsageError)
from tradeul_maint.keys import Keys
from tradeul_maint.planner import Plan
from tradeul_maint.replicas import Replication
from tradeul_maint.settings import MAIN_JOB, Job, ScheduleSettings, Settings
from tradeul_maint.state import SessionStatus, iso
from tradeul_maint.store import StateStore

if TYPE_CHECKING:
    from tradeul_maint import overview
    from tradeul_maint.lock import LockHolder
    from tradeul_maint.processes import TaskProcesses
    from tradeul_maint.runner import CycleResult

UTC = dt.timezone.utc


@dataclass
class RunReport:
    """What `run` or `recover` did for one job."""

    plan: Plan
    results: list[CycleResult] = field(default_factory=list)
    busy: LockHolder | None = None  # cron mode found the lock taken and did nothing
    job: str = MAIN_JOB
    error: MaintError | None = None  # this job's run failed so (the other jobs went on)

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)


@dataclass(frozen=True)
class Context:
    """What every command needs before it talks to Redis."""

    settings: Settings
    calendar: TradingCalendar
    now: dt.datetime
    # When this command started: `clock` must not drift with the age of the process (tests run many commands).
    started: float = field(default_factory=time.monotonic, compare=False)

    def clock(self) -> dt.datetime:
        """`now`, advancing with real time, so --now simulations record sensible durations."""
        return self.now + dt.timedelta(seconds=time.monotonic() - self.started)

    def for_job(self, job: Job) -> Context:
        """This context as one job sees it (Settings.for_job): the same calendar, time and clock."""
        return replace(self, settings=self.settings.for_job(job))


def prepare(settings: Settings, now_text: str | None) -> Context:
    ctx = _context(settings, now_text)
    if warning := ctx.calendar.expiry_warning(ctx.now):
        from loguru import logger

        # In the file on every command; on the console only where a person reads (status, calendar,
        # dry runs), since cron would mail it every few minutes for a month.
        logger.bind(console=False, last_session=str(ctx.calendar.library_last_session)).warning(
            "calendar_expiring", detail=warning)
    return ctx


def _context(settings: Settings, now_text: str | None) -> Context:
    calendar = load_calendar(settings.schedule.calendar, settings.calendar, settings.state_dir / "cache",
                             prebuilt=settings.calendar_cache)
    _check_ttl(settings, calendar)
    return Context(settings, calendar, parse_now(now_text, calendar))


def quiet_tick(settings: Settings, now_text: str | None) -> bool:
    """Whether `run` in cron mode would do nothing and log nothing: the question cli.py asks before typer loads.

    The steps of `prepare` and `run`, in their order and with their functions, minus the
    logging: False as soon as they would log (a calendar about to expire, `nothing_to_do`
    at a DEBUG file level). An error propagates; the caller lets commands.py report it.
    """
    if settings.logging.level in ("TRACE", "DEBUG"):
        return False
    ctx = _context(settings, now_text)
    if ctx.calendar.expiry_warning(ctx.now):
        return False
    with connected(ctx) as store:
        plans = _cron_plans(ctx, store, settings.jobs)
    return all(plan.empty for _, (plan, _) in plans)


def parse_now(text: str | None, calendar: TradingCalendar) -> dt.datetime:
    """ISO 8601; a naive time is exchange-local. None (not given) means the real current time."""
    if text is None:
        return dt.datetime.now(UTC)
    try:
        moment = dt.datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=calendar.tz)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):  # not a time, or one that UTC cannot hold (9999-12-31T23:59 local)
        raise UsageError(f"--now {text!r}: expected an ISO 8601 time like 2026-11-27T17:05 or "
                         "2026-11-27T22:05:00+00:00") from None


def _check_ttl(settings: Settings, calendar: TradingCalendar) -> None:
    """Everything each job's lookback can reach must still be in Redis (see planner.sessions_in_view)."""
    lookback = max((job.schedule.lookback_sessions for job in settings.jobs),
                   default=settings.schedule.lookback_sessions)
    needed = calendar.max_span_days(planner.sessions_reached(lookback)) + 1
    if settings.redis.status_ttl_days < needed:
        raise ConfigError(
            f"[redis] status_ttl_days = {settings.redis.status_ttl_days} is shorter than the "
            f"{lookback} sessions of lookback can span on {calendar.code} "
            f"({needed} days): raise it to at least {needed}")


@contextmanager
def connected(ctx: Context) -> Iterator[StateStore]:
    s = ctx.settings
    try:
        with open_redis(s.redis.url, s.state_dir, password_file=s.redis.password_file,
                        key_prefix=s.redis.key_prefix) as (client, _where):
            if len(s.jobs) > 1:
                from tradeul_maint.connection import check_cluster_prefix
                from tradeul_maint.handshake import is_cluster

                if is_cluster(client):  # every job's keys, each job's in one slot
                    for job in s.jobs:
                        check_cluster_prefix(job.key_prefix)
            yield StateStore(client, Keys(s.key_prefix), s.redis.status_ttl_days, s.redis.lock_lease_seconds,
                             Replication(s.redis.min_replicas, s.redis.replica_timeout_seconds, s.redis.wait_aof))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnavailableError(f"lost the connection to Redis: {str(exc).strip() or type(exc).__name__}") \
            from None
    except redis.ResponseError as exc:
        if (why := refused(exc)) is None:
            raise
        raise RedisRefusedWriteError(f"Redis refused the tool's commands: {why}; nothing was recorded as done that "
                                     "did not finish, and the next run resumes") from None


# Error codes of a Redis that is working but cannot take writes (or commands) right now.
REFUSALS = {
    "READONLY": "it is a read-only replica (READONLY; after a failover, point the URL at the new master or use "
                "Sentinel)",
    "NOREPLICAS": "not enough replicas acknowledge writes (NOREPLICAS, min-replicas-to-write)",
    "OOM": "it is out of memory (OOM, maxmemory with noeviction)",
    "MISCONF": "it cannot persist its data and refuses writes (MISCONF; see the Redis server log)",
    "LOADING": "it is loading its dataset (LOADING)",
    "MASTERDOWN": "its master is down (MASTERDOWN)",
    "BUSY": "it is busy running a script (BUSY)",
    "CLUSTERDOWN": "the cluster is down (CLUSTERDOWN)",
    "TRYAGAIN": "the cluster is resharding (TRYAGAIN)",
    "MOVED": "the cluster is moving the tool's hash slot (MOVED)",
}


def refused(exc: redis.ResponseError) -> str | None:
    """Why Redis refused a command for a passing state of its own (exit 75), or None for anything else.

    redis-py turns some codes into classes (and drops the code from the text); others lead the
    message, or follow a "-" inside a script's error ("... @user_script: 1: -READONLY ...").
    """
    classes = {redis.exceptions.ReadOnlyError: "READONLY", redis.exceptions.OutOfMemoryError: "OOM",
               redis.exceptions.BusyLoadingError: "LOADING",
               # With min_replicas the writes go to the slot's primary directly (replicas.py), MOVED and all.
               redis.exceptions.AskError: "MOVED"}
    code = next((c for cls, c in classes.items() if isinstance(exc, cls)), None)
    if code is None:
        text = str(exc)
        code = next((c for c in REFUSALS if text.startswith(c + " ") or f"-{c} " in text), None)
    return REFUSALS.get(code)


def run(ctx: Context, session: dt.date | None = None, only: tuple[str, ...] = (), force: bool = False,
        dry_run: bool = False, jobs: tuple[str, ...] = ()) -> list[RunReport]:
    """`run`: cron mode without `session` (every due job), a manual trigger with it; one report per job."""
    chosen = _jobs_for(ctx.settings, jobs, only)
    if session is not None:
        planner.check_session(ctx.calendar, session, ctx.now, _newest(ctx, chosen))
    with connected(ctx) as store:
        plans = dict(_cron_plans(ctx, store, chosen)) if session is None else {}
        return _each_job(ctx, store, chosen, lambda c, s: _run_job(c, s, session, only, force, dry_run,
                                                                   plans.get(c.settings.job)))


def _newest(ctx: Context, jobs: tuple[Job, ...]) -> dt.date | None:
    """The newest session whose window has opened, of any of these jobs: the latest date `--date` may name."""
    opened = [d for job in jobs if (d := planner.latest_opened(ctx.now, ctx.calendar, job.schedule))]
    return max(opened, default=None)


def _jobs_for(settings: Settings, names: tuple[str, ...], only: tuple[str, ...] = ()) -> tuple[Job, ...]:
    """The jobs --job names (all by default); with --task, those of them that have one of the tasks named."""
    chosen = settings.named_jobs(names)
    if not only:
        return chosen
    having = tuple(job for job in chosen if any(t.name in only for t in job.tasks))
    known = {t.name for job in chosen for t in job.tasks}
    unknown = [name for name in only if name not in known]
    if unknown or not having:
        raise UsageError(f"unknown task '{(unknown or only)[0]}': configured tasks are "
                         f"{', '.join(sorted(known)) or 'none'}")
    return having


def _each_job(ctx: Context, store: StateStore, jobs: tuple[Job, ...], work) -> list[RunReport]:
    """`work(job context, job store)` for each job in turn. With several, one that fails (a busy lock in manual
    mode, a key of the wrong type, a lock another tool wrote) is reported and the next goes on; Redis lost or a
    signal ends them all. Each job decides at the time its turn comes, not when the command started: a job
    whose window ended while the jobs before it ran is not started late."""
    reports = []
    for job in jobs:
        try:
            turn = replace(ctx.for_job(job), now=ctx.clock(), started=time.monotonic())
            reports.append(work(turn, store.job(job.key_prefix)))
        except (RedisUnavailableError, RedisRefusedWriteError):
            raise
        except MaintError as exc:
            if len(jobs) == 1:
                raise
            from loguru import logger

            logger.bind(job=job.name, error=str(exc), console=False).error("job_failed")
            reports.append(RunReport(Plan(), job=job.name, error=exc))
    return reports


def _run_job(ctx: Context, store: StateStore, session: dt.date | None, only: tuple[str, ...], force: bool,
             dry_run: bool, cron: tuple[Plan, dict] | None = None) -> RunReport:
    """One job's `run`; `cron`: its cron plan as the caller already read it (one round trip for every job)."""
    s = ctx.settings

    def make_plan(store: StateStore) -> tuple[Plan, dict[dt.date, SessionStatus | None]]:
        if session is not None:
            statuses = store.statuses([session])
            tasks = tuple(name for name in only if name in s.task_names)
            return planner.plan_manual(ctx.now, ctx.calendar, s.schedule, s.tasks, statuses[session], session,
                                       tasks, force), statuses
        return _cron_plan(ctx, store)

    from loguru import logger

    plan, _ = cron or make_plan(store)
    if plan.empty and not dry_run:
        logger.bind(job=s.job, deferred=[f"{d.session}: {d.reason}" for d in plan.deferred]).debug("nothing_to_do")
    if plan.empty or dry_run:
        return RunReport(plan, busy=_holder(store, plan) if dry_run else None, job=s.job)
    try:
        return _execute(ctx, store, make_plan, "cron" if session is None else "run --date", force, only)
    except LockBusyError as exc:
        if session is None:
            from tradeul_maint.lock import LockHolder

            logger.bind(job=s.job, holder=exc.holder).debug("lock_busy")
            return RunReport(plan, busy=LockHolder(**exc.holder) if exc.holder else None, job=s.job)
        raise


def _cron_plan(ctx: Context, store: StateStore) -> tuple[Plan, dict[dt.date, SessionStatus | None]]:
    """`run` without --date, for the job of `ctx`: its lookback's states, read in one round trip, and what to do."""
    s = ctx.settings
    statuses = store.statuses(planner.sessions_in_view(ctx.now, ctx.calendar, s.schedule))
    return planner.plan_cron(ctx.now, ctx.calendar, s.schedule, s.run, s.tasks, statuses), statuses


def _cron_plans(ctx: Context, store: StateStore, jobs: tuple[Job, ...]
                ) -> list[tuple[str, tuple[Plan, dict[dt.date, SessionStatus | None]]]]:
    """Every job's cron plan, their lookbacks' states read in one round trip whatever the number of jobs:
    the cron tick with nothing to do costs one round trip, not one per job."""
    views = [(job, planner.sessions_in_view(ctx.now, ctx.calendar, job.schedule)) for job in jobs]
    read = store.statuses_of([(job.key_prefix, sessions) for job, sessions in views])
    return [(job.name, (planner.plan_cron(ctx.now, ctx.calendar, job.schedule, ctx.settings.run, job.tasks, found),
                        found)) for (job, _), found in zip(views, read)]


def recover(ctx: Context, lookback: int | None = None, since: dt.date | None = None,
            until: dt.date | None = None, force: bool = False, dry_run: bool = False,
            jobs: tuple[str, ...] = ()) -> list[RunReport]:
    """`recover`: each job's lookback (or since..until) sessions that are not done, oldest first, under its lock."""
    if lookback is not None and since is not None:
        raise UsageError("--lookback and --since/--until exclude each other: give one or the other")
    chosen = _jobs_for(ctx.settings, jobs)
    with connected(ctx) as store:
        return _each_job(ctx, store, chosen, lambda c, s: _recover_job(c, s, lookback, since, until, force, dry_run))


def _recover_job(ctx: Context, store: StateStore, lookback: int | None, since: dt.date | None,
                 until: dt.date | None, force: bool, dry_run: bool) -> RunReport:
    schedule = _lookback(ctx, lookback)
    sessions, not_yet = planner.recovery_sessions(ctx.now, ctx.calendar, schedule, since, until)

    def make_plan(store: StateStore) -> tuple[Plan, dict[dt.date, SessionStatus | None]]:
        statuses = store.statuses(sessions)
        plan = planner.plan_recover(ctx.now, ctx.calendar, schedule, ctx.settings.tasks, sessions, statuses, force)
        return replace(plan, deferred=plan.deferred + not_yet), statuses

    plan, _ = make_plan(store)
    if plan.empty or dry_run:
        return RunReport(plan, busy=_holder(store, plan) if dry_run else None, job=ctx.settings.job)
    return _execute(ctx, store, make_plan, "recover", force)  # a busy lock is exit 75: the operator asked


def _holder(store: StateStore, plan: Plan) -> LockHolder | None:
    """For a dry run with something to do: who holds the lock now, since then the same call would run nothing."""
    if plan.empty:
        return None
    from tradeul_maint.lock import read_holder

    return read_holder(store.client, store.keys.lock)


def status(ctx: Context, lookback: int | None = None, session: dt.date | None = None,
           since: dt.date | None = None, until: dt.date | None = None, task: str | None = None,
           jobs: tuple[str, ...] = ()) -> list[overview.StatusView]:
    """`status`: for each job, the lookback's sessions (or one, or since..until's), the next window and the lock.

    With `task`, the views carry that task's trend over those sessions, for the jobs that have it.
    """
    chosen = ctx.settings.named_jobs(jobs)
    if task is not None:
        having = tuple(job for job in chosen if task in {t.name for t in job.tasks})
        chosen = having or chosen[:1]  # a task no job has (any more) is looked for in the documents of the first
    if session is not None:
        planner.check_session(ctx.calendar, session, ctx.now, _newest(ctx, chosen))
    with connected(ctx) as store:
        return [_status_job(ctx.for_job(job), store.job(job.key_prefix), lookback, session, since, until, task)
                for job in chosen]


def _status_job(ctx: Context, store: StateStore, lookback: int | None, session: dt.date | None,
                since: dt.date | None, until: dt.date | None, task: str | None) -> overview.StatusView:
    from tradeul_maint import overview

    if session is not None:
        sessions = [session]
    elif since is not None or until is not None:
        # The range's sessions, validated as `recover --since/--until` validates them, whatever their window.
        passed, later = planner.recovery_sessions(ctx.now, ctx.calendar, ctx.settings.schedule, since, until)
        sessions = passed + [d.session for d in later]
    else:
        sessions = planner.sessions_in_view(ctx.now, ctx.calendar, _lookback(ctx, lookback))
    seen = store.overview(sessions)
    s = ctx.settings
    # What cron's `run` would do about these states now: the notes say it in the planner's words.
    plan = planner.plan_cron(ctx.now, ctx.calendar, s.schedule, s.run, s.tasks, seen.statuses)
    return overview.build(ctx.now, ctx.calendar, s, seen, sessions, detail=session is not None, task=task, plan=plan)


def _lookback(ctx: Context, lookback: int | None) -> ScheduleSettings:
    """The schedule with `--lookback N` applied; N sessions must not reach past the status TTL."""
    schedule = ctx.settings.schedule
    if lookback is None:
        return schedule
    if lookback < 1:
        raise UsageError(f"--lookback {lookback}: expected a number of sessions, 1 or more")
    needed = ctx.calendar.max_span_days(planner.sessions_reached(lookback)) + 1
    if ctx.settings.redis.status_ttl_days < needed:
        raise UsageError(f"--lookback {lookback} can span {needed} days, longer than status_ttl_days = "
                         f"{ctx.settings.redis.status_ttl_days} keeps a session's state: use a smaller "
                         f"--lookback or --since/--until, or raise [redis] status_ttl_days")
    return replace(schedule, lookback_sessions=lookback)


def _execute(ctx: Context, store: StateStore, make_plan, command: str, force: bool = False,
             only: tuple[str, ...] = ()) -> RunReport:
    """Take the lock, plan again under it, run the cycles under a supervisor: shared by `run` and `recover`.

    The supervisor is forked before the lock is taken (no thread of the run exists yet), and
    under the lock what earlier runs on this host left alive is stopped before anything runs.
    `command`, `force` and `only` (the --task names) say what started the cycles, for the audit trail.

    The lock is released only after the supervisor has exited, that is once no process of
    any task is left; a signal at any moment of the run makes it end with Interrupted.
    """
    import uuid

    from loguru import logger

    from tradeul_maint import metrics, notify
    from tradeul_maint.lock import RunLock
    from tradeul_maint.runner import Interrupted, Runner, StopSignals, Trigger
    from tradeul_maint.schedule import known_durations

    s = ctx.settings
    run_id = uuid.uuid4().hex[:12]
    lock = RunLock(store.client, store.keys.lock, s.redis.lock_lease_seconds, run_id, iso(ctx.now),
                   store.replication)
    # Signals first: one that comes while the lock is being taken still stops the run cleanly.
    with StopSignals(s.run.max_run_minutes) as stop, _supervised(ctx, store, lock) as processes, \
            _held(lock, processes, s):
        # Plan again under the lock: a runner that finished a moment ago may have done it all.
        plan, statuses = make_plan(store)
        report = RunReport(plan, job=s.job)
        if plan.empty:
            return report
        # A key of another type would stop a cycle at its first write: find out before any task runs.
        store.check_key_types([p.session for p in plan.sessions])
        seen = {**store.statuses(planner.sessions_in_view(ctx.now, ctx.calendar, s.schedule)), **statuses}
        newest_first = [seen[d] for d in sorted(seen, reverse=True)]
        try:
            # Yesterday's durations tell a new session's cycle which tasks to start first.
            runner = Runner(s, store, lock, ctx.clock, processes, stop, durations=known_durations(newest_first),
                            history=seen, trigger=Trigger(command, force, only),
                            start_wait=lambda spec: planner.start_wait(spec, ctx.clock(), ctx.calendar),
                            tz=ctx.calendar.tz)
            missed = [p.session.isoformat() for p in plan.sessions if p.recovery]
            if missed:  # the replaced service's event names, so existing alerts keep working
                logger.bind(count=len(missed), dates=missed, run_id=run_id, job=s.job, console=False) \
                    .warning("missing_maintenance_days_detected")
            for planned in plan.sessions:
                stop.check()
                if planned.recovery:
                    logger.bind(date=planned.session.isoformat(), run_id=run_id, job=s.job, reason=planned.reason) \
                        .info("executing_recovery_maintenance")
                # Monitoring: pings, then the metrics. A cycle that may only find its data missing sends no
                # /start (it would be no attempt), only the outcome of what it ran, if anything.
                with notify.cycle(s.notify, planned.session,
                                  start=not planner.may_only_wait(planned, s.tasks)) as ping:
                    report.results.append(runner.run_cycle(planned, statuses.get(planned.session)))
                    ping.finished(report.results[-1])
                metrics.publish_after_cycle(ctx, store, planned.session)
        finally:
            if not processes.close():
                logger.bind(run_id=run_id, job=s.job, console=False).error("supervisor_did_not_exit")
                lock.keep()
        if stop.reason is not None:  # whenever it came, a signal (or the deadline) decides the exit code
            raise Interrupted(stop.reason, stop.exit_code)
        return report


@contextmanager
def _supervised(ctx: Context, store: StateStore, lock) -> Iterator[TaskProcesses]:
    """This run's supervisor (supervisor/), which owns every task process of the run: forked now, closed at the end."""
    from tradeul_maint import logs
    from tradeul_maint.handshake import is_cluster
    from tradeul_maint.processes import Sinks, TaskProcesses

    s = ctx.settings
    socket_path = store.client.connection_pool.connection_kwargs.get("path") if s.redis.url is None else None
    target = {"unix_socket": socket_path} if socket_path else {
        "url": s.redis.url, "password_file": str(s.redis.password_file) if s.redis.password_file else None,
        "cluster": is_cluster(store.client)}
    sinks = Sinks(logs.installed.directory, logs.installed.verbose, logs.installed.quiet)
    processes = TaskProcesses(s, lock.run_id, lock.key, target, sinks)
    try:
        yield processes
    finally:
        processes.close()  # when the lock was not taken; else done already, before the lock went


@contextmanager
def _held(lock, processes: TaskProcesses, s: Settings) -> Iterator[None]:
    """The run lock, for the supervisor's lease watch too; first, what earlier runs on this host left is stopped."""
    from loguru import logger

    from tradeul_maint.containment import stop_dead_runs
    from tradeul_maint.processes import STOP_MARGIN

    with lock:
        try:
            processes.lease_held(lock)
            for dead, pids in stop_dead_runs(s.state_dir, lock.key, lock.run_id, s.run.stop_grace_seconds,
                                             STOP_MARGIN).items():
                logger.bind(previous_run_id=dead, pids=pids, run_id=lock.run_id).warning("leftover_processes_stopped")
            yield
        finally:
            if not processes.close():  # whatever ended the run: the lock stays while a process of it may live
                lock.keep()


def calendar(ctx: Context, count: int = 5) -> dict:
    """`calendar`: the calendar in use, how far it reaches, its overrides and the next windows."""
    from tradeul_maint import overview

    return overview.calendar_view(ctx.now, ctx.calendar, ctx.settings, count)
