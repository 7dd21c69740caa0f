"""The commands' work without the command line: plan, lock, run, report (what they all need first: basis.py).

Each function takes a Context and plain values and returns a report for the CLI to render;
failures are MaintError subclasses that the CLI turns into exit codes.

Every command works job by job (settings.Job): `run`, `recover` and `status` apply the one
planner to each job named with --job (all of them by default), in configuration order, each
under its own lock and on its own keys, over one connection. A job whose lock is busy, or
whose run fails, does not stop the next; a signal or a lost Redis stops them all.

The cron tick with nothing to do (`quiet_tick`) needs only settings, the calendar, Redis
and the planner, and must not pay for more (see cli/main.py): the runner, the lock, the status
view and loguru are imported by the functions that use them.
"""

from __future__ import annotations

import datetime as dt
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterator

from tradeul_maint.base.errors import (LockBusyError, MaintError, RedisRefusedWriteError, RedisUnavailableError,
                                       UsageError)
from tradeul_maint.config.settings import MAIN_JOB, Job, ScheduleSettings, Settings
from tradeul_maint.core.basis import Context, connected, load_context
from tradeul_maint.plan import horizon, planner
from tradeul_maint.plan.planner import Plan
from tradeul_maint.state.document import SessionStatus, iso
from tradeul_maint.state.store import StateStore

if TYPE_CHECKING:
    from tradeul_maint.run.events import Listener
    from tradeul_maint.run.processes import TaskProcesses
    from tradeul_maint.run.result import CycleResult
    from tradeul_maint.state.lock import LockHolder
    from tradeul_maint.view import model


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


def quiet_tick(settings: Settings, now_text: str | None) -> bool:
    """Whether `run` in cron mode would do nothing and log nothing: the question cli/main.py asks before typer loads.

    The steps of `prepare` and `run`, in their order and with their functions, minus the
    logging: False as soon as they would log (a calendar about to expire, `nothing_to_do`
    at a DEBUG file level). An error propagates; the caller lets cli/commands.py report it.
    """
    if settings.logging.level in ("TRACE", "DEBUG"):
        return False
    ctx = load_context(settings, now_text)
    if ctx.calendar.expiry_warning(ctx.now):
        return False
    with connected(ctx) as store:
        plans = _cron_plans(ctx, store, settings.jobs)
    return all(plan.empty for _, (plan, _) in plans)


def run(ctx: Context, session: dt.date | None = None, only: tuple[str, ...] = (), force: bool = False,
        dry_run: bool = False, jobs: tuple[str, ...] = (), listener: Listener | None = None) -> list[RunReport]:
    """`run`: cron mode without `session` (every due job), a manual trigger with it; one report per job.
    `listener` hears each step of the cycles (run/events.py)."""
    chosen = _jobs_for(ctx.settings, jobs, only)
    if session is not None:
        horizon.check_session(ctx.calendar, session, ctx.now, _newest(ctx, chosen))
    with connected(ctx) as store:
        plans = dict(_cron_plans(ctx, store, chosen)) if session is None else {}
        return _each_job(ctx, store, chosen, lambda c, s: _run_job(c, s, session, only, force, dry_run,
                                                                   plans.get(c.settings.job), listener))


def _newest(ctx: Context, jobs: tuple[Job, ...]) -> dt.date | None:
    """The newest session whose window has opened, of any of these jobs: the latest date `--date` may name."""
    opened = [d for job in jobs if (d := horizon.latest_opened(ctx.now, ctx.calendar, job.schedule))]
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
             dry_run: bool, cron: tuple[Plan, dict] | None = None, listener: Listener | None = None) -> RunReport:
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
        return _execute(ctx, store, make_plan, "cron" if session is None else "run --date", force, only, listener)
    except LockBusyError as exc:
        if session is None:
            from tradeul_maint.state.lock import LockHolder

            logger.bind(job=s.job, holder=exc.holder).debug("lock_busy")
            return RunReport(plan, busy=LockHolder(**exc.holder) if exc.holder else None, job=s.job)
        raise


def _cron_plan(ctx: Context, store: StateStore) -> tuple[Plan, dict[dt.date, SessionStatus | None]]:
    """`run` without --date, for the job of `ctx`: its lookback's states, read in one round trip, and what to do."""
    s = ctx.settings
    statuses = store.statuses(horizon.sessions_in_view(ctx.now, ctx.calendar, s.schedule))
    return planner.plan_cron(ctx.now, ctx.calendar, s.schedule, s.run, s.tasks, statuses), statuses


def _cron_plans(ctx: Context, store: StateStore, jobs: tuple[Job, ...]
                ) -> list[tuple[str, tuple[Plan, dict[dt.date, SessionStatus | None]]]]:
    """Every job's cron plan, their lookbacks' states read in one round trip whatever the number of jobs:
    the cron tick with nothing to do costs one round trip, not one per job."""
    views = [(job, horizon.sessions_in_view(ctx.now, ctx.calendar, job.schedule)) for job in jobs]
    read = store.statuses_of([(job.key_prefix, sessions) for job, sessions in views])
    return [(job.name, (planner.plan_cron(ctx.now, ctx.calendar, job.schedule, ctx.settings.run, job.tasks, found),
                        found)) for (job, _), found in zip(views, read)]


def recover(ctx: Context, lookback: int | None = None, since: dt.date | None = None,
            until: dt.date | None = None, force: bool = False, dry_run: bool = False,
            jobs: tuple[str, ...] = (), listener: Listener | None = None) -> list[RunReport]:
    """`recover`: each job's lookback (or since..until) sessions that are not done, oldest first, under its lock."""
    if lookback is not None and since is not None:
        raise UsageError("--lookback and --since/--until exclude each other: give one or the other")
    chosen = _jobs_for(ctx.settings, jobs)
    with connected(ctx) as store:
        return _each_job(ctx, store, chosen,
                         lambda c, s: _recover_job(c, s, lookback, since, until, force, dry_run, listener))


def _recover_job(ctx: Context, store: StateStore, lookback: int | None, since: dt.date | None,
                 until: dt.date | None, force: bool, dry_run: bool, listener: Listener | None = None) -> RunReport:
    schedule = _lookback(ctx, lookback)
    sessions, not_yet = horizon.recovery_sessions(ctx.now, ctx.calendar, schedule, since, until)

    def make_plan(store: StateStore) -> tuple[Plan, dict[dt.date, SessionStatus | None]]:
        statuses = store.statuses(sessions)
        plan = planner.plan_recover(ctx.now, ctx.calendar, schedule, ctx.settings.tasks, sessions, statuses, force)
        return replace(plan, deferred=plan.deferred + not_yet), statuses

    plan, _ = make_plan(store)
    if plan.empty or dry_run:
        return RunReport(plan, busy=_holder(store, plan) if dry_run else None, job=ctx.settings.job)
    return _execute(ctx, store, make_plan, "recover", force, listener=listener)  # busy lock: exit 75, as asked


def _holder(store: StateStore, plan: Plan) -> LockHolder | None:
    """For a dry run with something to do: who holds the lock now, since then the same call would run nothing."""
    if plan.empty:
        return None
    from tradeul_maint.state.lock import read_holder

    return read_holder(store.client, store.keys.lock)


def status(ctx: Context, lookback: int | None = None, session: dt.date | None = None,
           since: dt.date | None = None, until: dt.date | None = None, task: str | None = None,
           jobs: tuple[str, ...] = ()) -> list[model.StatusView]:
    """`status`: for each job, the lookback's sessions (or one, or since..until's), the next window and the lock.

    With `task`, the views carry that task's trend over those sessions, for the jobs that have it.
    """
    chosen = ctx.settings.named_jobs(jobs)
    if task is not None:
        having = tuple(job for job in chosen if task in {t.name for t in job.tasks})
        chosen = having or chosen[:1]  # a task no job has (any more) is looked for in the documents of the first
    if session is not None:
        horizon.check_session(ctx.calendar, session, ctx.now, _newest(ctx, chosen))
    with connected(ctx) as store:
        return [_status_job(ctx.for_job(job), store.job(job.key_prefix), lookback, session, since, until, task)
                for job in chosen]


def _status_job(ctx: Context, store: StateStore, lookback: int | None, session: dt.date | None,
                since: dt.date | None, until: dt.date | None, task: str | None) -> model.StatusView:
    from tradeul_maint.view import overview

    if session is not None:
        sessions = [session]
    elif since is not None or until is not None:
        # The range's sessions, validated as `recover --since/--until` validates them, whatever their window.
        passed, later = horizon.recovery_sessions(ctx.now, ctx.calendar, ctx.settings.schedule, since, until)
        sessions = passed + [d.session for d in later]
    else:
        sessions = horizon.sessions_in_view(ctx.now, ctx.calendar, _lookback(ctx, lookback))
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
    needed = ctx.calendar.max_span_days(horizon.sessions_reached(lookback)) + 1
    if ctx.settings.redis.status_ttl_days < needed:
        raise UsageError(f"--lookback {lookback} can span {needed} days, longer than status_ttl_days = "
                         f"{ctx.settings.redis.status_ttl_days} keeps a session's state: use a smaller "
                         f"--lookback or --since/--until, or raise [redis] status_ttl_days")
    return replace(schedule, lookback_sessions=lookback)


def _execute(ctx: Context, store: StateStore, make_plan, command: str, force: bool = False,
             only: tuple[str, ...] = (), listener: Listener | None = None) -> RunReport:
    """Take the lock, plan again under it, run the cycles under a supervisor: shared by `run` and `recover`.

    The supervisor is forked before the lock is taken (no thread of the run exists yet), and
    under the lock what earlier runs on this host left alive is stopped before anything runs.
    `command`, `force` and `only` (the --task names) say what started the cycles, for the audit trail.

    The lock is released only after the supervisor has exited, that is once no process of
    any task is left; a signal at any moment of the run makes it end with Interrupted.
    """
    import uuid

    from loguru import logger

    from tradeul_maint.observe import metrics, notify
    from tradeul_maint.plan.schedule import known_durations
    from tradeul_maint.run.recorder import Trigger
    from tradeul_maint.run.runner import Runner
    from tradeul_maint.run.stopping import Interrupted, StopSignals
    from tradeul_maint.state.lock import LockHolder, RunLock

    from tradeul_maint.run.events import RecoveryStarting, ignore

    listener = listener or ignore  # the events are imported here: the cron tick with nothing to do never needs them
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
        seen = {**store.statuses(horizon.sessions_in_view(ctx.now, ctx.calendar, s.schedule)), **statuses}
        newest_first = [seen[d] for d in sorted(seen, reverse=True)]
        try:
            # Yesterday's durations tell a new session's cycle which tasks to start first.
            runner = Runner(s, store, lock, ctx.clock, processes, stop, durations=known_durations(newest_first),
                            history=seen, trigger=Trigger(command, force, only),
                            start_wait=lambda spec: planner.start_wait(spec, ctx.clock(), ctx.calendar),
                            tz=ctx.calendar.tz, listener=listener)
            missed = [p.session.isoformat() for p in plan.sessions if p.recovery]
            if missed:  # the replaced service's event names, so existing alerts keep working
                logger.bind(count=len(missed), dates=missed, run_id=run_id, job=s.job, console=False) \
                    .warning("missing_maintenance_days_detected")
            for planned in plan.sessions:
                stop.check()
                if planned.recovery:
                    logger.bind(date=planned.session.isoformat(), run_id=run_id, job=s.job, reason=planned.reason) \
                        .info("executing_recovery_maintenance")
                    listener(RecoveryStarting(planned.session))
                # Monitoring: pings, then the metrics. A cycle that may only find its data missing sends no
                # /start (it would be no attempt), only the outcome of what it ran, if anything.
                with notify.cycle(s.notify, planned.session,
                                  start=not planner.may_only_wait(planned, s.tasks)) as ping:
                    result = runner.run_cycle(planned, statuses.get(planned.session))
                    report.results.append(result)
                    ping.finished(result)
                seen[result.session] = result.status
                metrics.publish_after_cycle(s, ctx.calendar, ctx.clock(), store, seen, LockHolder.parse(lock.token),
                                            result)
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
    from tradeul_maint.config import logs
    from tradeul_maint.redisio.hello import is_cluster
    from tradeul_maint.run.processes import Sinks, TaskProcesses

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

    from tradeul_maint.run.containment import stop_dead_runs
    from tradeul_maint.run.processes import STOP_MARGIN

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
    from tradeul_maint.view import calendar_view

    return calendar_view.calendar_view(ctx.now, ctx.calendar, ctx.settings, count)
