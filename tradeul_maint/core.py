"""The commands' work without the command line: load, plan, lock, run, report.

Each function takes settings and plain values and returns a report for the CLI to render;
failures are MaintError subclasses that the CLI turns into exit codes.

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
from tradeul_maint.errors import (ConfigError, LockBusyError, RedisRefusedWriteError, RedisUnavailableError,
                                  UsageError)
from tradeul_maint.keys import Keys
from tradeul_maint.planner import Plan
from tradeul_maint.replicas import Replication
from tradeul_maint.settings import ScheduleSettings, Settings
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
    plan: Plan
    results: list[CycleResult] = field(default_factory=list)
    busy: LockHolder | None = None  # cron mode found the lock taken and did nothing

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
        plan, _ = _cron_plan(ctx, store)
    return plan.empty


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
    """Everything the lookback can reach must still be in Redis (see planner.sessions_in_view)."""
    needed = calendar.max_span_days(planner.sessions_reached(settings.schedule.lookback_sessions)) + 1
    if settings.redis.status_ttl_days < needed:
        raise ConfigError(
            f"[redis] status_ttl_days = {settings.redis.status_ttl_days} is shorter than the "
            f"{settings.schedule.lookback_sessions} sessions of lookback can span on {calendar.code} "
            f"({needed} days): raise it to at least {needed}")


@contextmanager
def connected(ctx: Context) -> Iterator[StateStore]:
    s = ctx.settings
    try:
        with open_redis(s.redis.url, s.state_dir, password_file=s.redis.password_file,
                        key_prefix=s.redis.key_prefix) as (client, _where):
            yield StateStore(client, Keys(s.redis.key_prefix), s.redis.status_ttl_days, s.redis.lock_lease_seconds,
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
        dry_run: bool = False) -> RunReport:
    """`run`: cron mode without `session`, a manual trigger with it."""
    s = ctx.settings
    if session is not None:
        planner.check_session(ctx.calendar, session, ctx.now)

    def make_plan(store: StateStore) -> tuple[Plan, dict[dt.date, SessionStatus | None]]:
        if session is not None:
            statuses = store.statuses([session])
            return planner.plan_manual(ctx.now, ctx.calendar, s.schedule, s.tasks, statuses[session], session,
                                       only, force), statuses
        return _cron_plan(ctx, store)

    from loguru import logger

    with connected(ctx) as store:
        plan, _ = make_plan(store)
        if plan.empty and not dry_run:
            logger.bind(deferred=[f"{d.session}: {d.reason}" for d in plan.deferred]).debug("nothing_to_do")
        if plan.empty or dry_run:
            return RunReport(plan, busy=_holder(store, plan) if dry_run else None)
        try:
            return _execute(ctx, store, make_plan, "cron" if session is None else "run --date", force, only)
        except LockBusyError as exc:
            if session is None:
                from tradeul_maint.lock import LockHolder

                logger.bind(holder=exc.holder).debug("lock_busy")
                return RunReport(plan, busy=LockHolder(**exc.holder) if exc.holder else None)
            raise


def _cron_plan(ctx: Context, store: StateStore) -> tuple[Plan, dict[dt.date, SessionStatus | None]]:
    """`run` without --date: the lookback's states, read in one round trip, and what to do about them."""
    s = ctx.settings
    statuses = store.statuses(planner.sessions_in_view(ctx.now, ctx.calendar, s.schedule))
    return planner.plan_cron(ctx.now, ctx.calendar, s.schedule, s.run, s.tasks, statuses), statuses


def recover(ctx: Context, lookback: int | None = None, since: dt.date | None = None,
            until: dt.date | None = None, force: bool = False, dry_run: bool = False) -> RunReport:
    """`recover`: the lookback's (or since..until's) sessions that are not done, oldest first, under the lock."""
    if lookback is not None and since is not None:
        raise UsageError("--lookback and --since/--until exclude each other: give one or the other")
    schedule = _lookback(ctx, lookback)
    sessions, not_yet = planner.recovery_sessions(ctx.now, ctx.calendar, schedule, since, until)

    def make_plan(store: StateStore) -> tuple[Plan, dict[dt.date, SessionStatus | None]]:
        statuses = store.statuses(sessions)
        plan = planner.plan_recover(ctx.now, ctx.calendar, schedule, ctx.settings.tasks, sessions, statuses, force)
        return replace(plan, deferred=plan.deferred + not_yet), statuses

    with connected(ctx) as store:
        plan, _ = make_plan(store)
        if plan.empty or dry_run:
            return RunReport(plan, busy=_holder(store, plan) if dry_run else None)
        return _execute(ctx, store, make_plan, "recover", force)  # a busy lock is exit 75: the operator asked


def _holder(store: StateStore, plan: Plan) -> LockHolder | None:
    """For a dry run with something to do: who holds the lock now, since then the same call would run nothing."""
    if plan.empty:
        return None
    from tradeul_maint.lock import read_holder

    return read_holder(store.client, store.keys.lock)


def status(ctx: Context, lookback: int | None = None, session: dt.date | None = None,
           since: dt.date | None = None, until: dt.date | None = None, task: str | None = None
           ) -> overview.StatusView:
    """`status`: the lookback's sessions (or one, or since..until's), the next window and the lock, in one read.

    With `task`, the view carries that task's trend over those sessions.
    """
    from tradeul_maint import overview

    if session is not None:
        planner.check_session(ctx.calendar, session, ctx.now)
        sessions = [session]
    elif since is not None or until is not None:
        # The range's sessions, validated as `recover --since/--until` validates them, whatever their window.
        passed, later = planner.recovery_sessions(ctx.now, ctx.calendar, ctx.settings.schedule, since, until)
        sessions = passed + [d.session for d in later]
    else:
        sessions = planner.sessions_in_view(ctx.now, ctx.calendar, _lookback(ctx, lookback))
    with connected(ctx) as store:
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
        report = RunReport(plan)
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
                            start_wait=lambda spec: planner.start_wait(spec, ctx.clock(), ctx.calendar))
            missed = [p.session.isoformat() for p in plan.sessions if p.recovery]
            if missed:  # the replaced service's event names, so existing alerts keep working
                logger.bind(count=len(missed), dates=missed, run_id=run_id, console=False) \
                    .warning("missing_maintenance_days_detected")
            for planned in plan.sessions:
                stop.check()
                if planned.recovery:
                    logger.bind(date=planned.session.isoformat(), run_id=run_id, reason=planned.reason) \
                        .info("executing_recovery_maintenance")
                with notify.cycle(s.notify, planned.session) as ping:  # monitoring: pings, then the textfile
                    report.results.append(runner.run_cycle(planned, statuses.get(planned.session)))
                    ping.finished(report.results[-1])
                metrics.publish_after_cycle(ctx, store, planned.session)
        finally:
            if not processes.close():
                logger.bind(run_id=run_id, console=False).error("supervisor_did_not_exit")
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
