"""Running one cycle of one session: the task graph, parallelism, retries, timeouts, signals and state.

The runner owns the state and the signals; the run's supervisor (supervisor.py) owns the
task processes. The main thread schedules (schedule.py), asks the supervisor to start
attempts, waits for it to report how they ended (or for a timeout or a retry to fall
due), and records. Every transition (in_progress, completed, failed, skipped) is in
Redis, fenced on the run lock, before anything that depends on it happens: the
transitions of one scheduling step (the tasks that just ended, those they block, those
that now start) go out together in one write of the whole status document, before the
new tasks start (store.py). So a crash loses nothing that completed, a runner that lost
the lock stops instead of overwriting its successor, and the document is the session's
state at every moment. With `[redis] min_replicas`, a write the replicas did not confirm
in time (replicas.py) ends the cycle as a lost lock does: no further task starts.

A task with a wait_for probe is probed (a command, through the supervisor) just before it
would start: exit 0 starts it; anything else leaves it, and what runs after it, waiting for
data (pending, with since when), or fails it once its wait has ended (the plan says when). A
cycle that did nothing but find data missing is not an attempt: the session's attempt count
is left as it was, and its record replaces the previous such cycle's.

However a cycle ends (completed, a signal, a lost lock, Redis gone, a bug), it ends only
once the supervisor has reported every attempt of it ended, that is with no process of
any task left; a task is recorded stopped only then, and the lock is released only
after that.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from loguru import logger

from tradeul_maint import safejson
from tradeul_maint.errors import (EXIT_RUN_DEADLINE, SIGNAL_EXIT_CODES, LockLostError, ReplicasInDoubtError,
                                  TaskProcessesLostError)
from tradeul_maint.exchange import AttemptId, Ended
from tradeul_maint.lock import RunLock
from tradeul_maint.planner import PlannedSession, caught_up, span_text, waits_after
from tradeul_maint.redact import scrub, scrub_value
from tradeul_maint.schedule import Schedule, known_durations, priority_order
from tradeul_maint.tasklist import task_list
from tradeul_maint.settings import Settings, TaskSpec
from tradeul_maint.state import (COMPLETED, FAILED, IN_PROGRESS, INTERRUPTED_ATTEMPT, PENDING, RUNNER_STOPPED,
                                 SKIPPED, WAITING_FOR_DATA, AttemptRecord, CycleRecord, SessionStatus, TaskRecord,
                                 cap_error, iso, parse_time)
from tradeul_maint.store import StateStore
from tradeul_maint.processes import STOP_MARGIN, TaskProcesses, stop_leftovers
from tradeul_maint.tasks import Outcome, command_outcome, command_request, python_outcome, python_request
from tradeul_maint.trends import median_durations, slow_tasks

Clock = Callable[[], dt.datetime]
STATUS_OUTPUT_LIMIT = 4096  # characters of a failed command's output kept in the status document
LOG_OUTPUT_LIMIT = 16384
POLL_SECONDS = 0.2  # the longest the main thread waits before it looks at signals and the lock again
PROBE = 0  # the number of a task's wait_for probe in its AttemptId: its attempts count from 1
PROBE_TIMEOUT = 60.0  # seconds a wait_for probe may take (less if its task's timeout is less); one that takes
# longer is stopped, and means "not yet"


class Interrupted(Exception):
    """The run was stopped by SIGTERM, SIGINT or SIGHUP, or by its deadline; its state says what did not complete."""

    def __init__(self, why: str, exit_code: int):
        super().__init__(why)
        self.exit_code = exit_code


@dataclass
class CycleResult:
    session: dt.date
    status: SessionStatus
    ran: tuple[str, ...]
    seconds: float
    waited_only: bool = False  # it only found data missing (wait_for): no attempt, nothing to say under cron

    @property
    def failures(self) -> dict[str, str]:
        return {name: self.status.details.get(name, TaskRecord()).error or state
                for name, state in self.status.tasks.items() if state in (FAILED, SKIPPED)
                and name in self.ran}

    @property
    def success(self) -> bool:
        return self.status.done

    @property
    def left_to_newest(self) -> set[str]:
        """Tasks skipped with a reason (`catchup = "latest"`): left to the newest session, not failed."""
        return {name for name in self.status.tasks if caught_up(self.status, name)}

    @property
    def waiting(self) -> dict[str, str]:
        """Tasks left pending with a reason: they wait for the close (`market_closed_only`) or for data
        (`wait_for`), not failed."""
        s = self.status
        return {name: s.details[name].reason for name, state in s.tasks.items()
                if state == PENDING and s.details.get(name) and s.details[name].reason}

    def headline(self) -> str:
        """`2026-11-25: 5/6 tasks completed in 3.1s`, as `run` prints it and the failure ping sends it."""
        s, later, waiting = self.status, self.left_to_newest, self.waiting
        completed = sum(state == COMPLETED for state in s.tasks.values())
        data = [n for n in waiting if s.details[n].waiting_since]
        note = f" ({len(later)} left to the newest session: catchup = \"latest\")" if later else ""
        note += f" ({len(waiting) - len(data)} waiting for the close)" if len(waiting) > len(data) else ""
        note += f" ({len(data)} waiting for data)" if data else ""
        return f"{self.session}: {completed}/{len(s.tasks)} tasks completed{note} in {self.seconds:.1f}s"

    def failure_lines(self) -> list[str]:
        """What failed or was skipped among the tasks this run ran, with why: the lines under the headline."""
        return [f"  {name} {self.status.tasks[name]}: {error}" for name, error in self.failures.items()]


class StopSignals:
    """Turns SIGTERM, SIGINT and SIGHUP, and the run's deadline, into a stop request, which the cycle notices
    within POLL_SECONDS.

    The first signal (or the deadline, `[run] max_run_minutes` after the run started) decides
    the exit code; more signals while stopping change nothing. The task processes are in
    sessions of their own, so a terminal's signals reach only the runner, which stops them
    through the supervisor. A deadline stops a run exactly as a signal does (its tasks
    stopped, then recorded as interrupted), and exits EXIT_RUN_DEADLINE.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self, max_run_minutes: float | None = None) -> None:
        self.reason: str | None = None  # what stopped the run first: "SIGTERM", "[run] max_run_minutes = 240"
        self.exit_code = 0
        self._deadline = time.monotonic() + max_run_minutes * 60 if max_run_minutes else None
        self._max_run_minutes = max_run_minutes
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self._stop(signal.Signals(signum).name, SIGNAL_EXIT_CODES.get(signum, 128 + signum))

    def _stop(self, reason: str, exit_code: int) -> None:
        if self.reason is None:
            self.reason, self.exit_code = reason, exit_code

    @property
    def requested(self) -> bool:
        """Whether the run must stop: a signal came, or (looked at now) its deadline has passed."""
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._stop(f"[run] max_run_minutes = {self._max_run_minutes:g}", EXIT_RUN_DEADLINE)
        return self.reason is not None

    def check(self) -> None:
        if self.requested:
            raise Interrupted(self.reason, self.exit_code)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Trigger:
    """What started a run's cycles, for the audit trail: `cron` (`run` without --date), `run --date` or `recover`."""

    command: str = "cron"
    force: bool = False
    only: tuple[str, ...] = ()  # the --task names


def who() -> str:
    """Who runs this process, for the audit trail: the account of its uid (not $USER, which anyone sets), else
    the uid (a container may have no passwd entry), and the account that ran sudo, when it did."""
    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        name = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{name} (sudo by {sudo})" if sudo and sudo != name else name


@dataclass
class Running:
    """A task of this cycle with an attempt under way, or waiting out its retry delay."""

    spec: TaskSpec
    started: float  # monotonic, its first attempt in this cycle
    attempt: int = 0  # attempts started in this cycle
    attempt_id: AttemptId | None = None  # the attempt the supervisor runs now; None while waiting to retry
    deadline: float | None = None  # when that attempt times out (monotonic)
    retry_at: float | None = None  # when the next attempt starts (monotonic)
    stopping: bool = False  # asked to stop (timeout)
    record: AttemptRecord | None = None  # the current attempt in the cycle's record
    probing: bool = False  # attempt_id is its wait_for probe, not an attempt


@dataclass
class Runner:
    settings: Settings
    store: StateStore
    lock: RunLock
    clock: Clock
    processes: TaskProcesses
    stop: StopSignals
    # Each task's last known duration, from earlier sessions and this run's cycles: the priorities.
    durations: dict[str, float] = field(default_factory=dict)
    # The lookback's status documents: what "slower than usual" compares a task's duration with.
    history: dict[dt.date, SessionStatus | None] = field(default_factory=dict)
    trigger: Trigger = Trigger()
    # Why a task may not start now (planner.start_wait: the exchange opened during the run), or None.
    start_wait: Callable[[TaskSpec], str | None] = lambda spec: None
    tz: dt.tzinfo = dt.timezone.utc  # the exchange's: the times an operator reads in a reason
    _cycle: CycleRecord | None = field(default=None, init=False)  # this cycle's record, in the document
    _waits: dict[str, str] = field(default_factory=dict, init=False)  # this cycle's tasks held back for the close
    _blocked: bool = field(default=False, init=False)  # the step recorded blocked or held-back tasks
    _since: dict[str, str] = field(default_factory=dict, init=False)  # ...or for data: since when (iso)
    _probes: dict[str, dt.datetime] = field(default_factory=dict, init=False)  # not probed yet: until when to wait
    _attempted: bool = field(default=False, init=False)  # an attempt (not a probe) started in this cycle

    def run_cycle(self, planned: PlannedSession, existing: SessionStatus | None) -> CycleResult:
        """Run the planned tasks of one session and record the outcome; raises Interrupted on a signal."""
        log = logger.bind(date=planned.session.isoformat(), run_id=self.lock.run_id, job=self.settings.job)
        started = time.monotonic()
        specs = {t.name: t for t in self.settings.tasks}
        parallel = self.settings.run.max_parallel
        known = {**self.durations, **known_durations([existing])}
        order = priority_order(planned.tasks, specs, known, parallel)
        status = self._begin(planned, existing, known, log)
        schedule = Schedule(order, specs, done_before={name for name, state in status.tasks.items()
                                                       if state == COMPLETED and name not in planned.tasks})
        running: dict[str, Running] = {}
        changed = False  # the last step recorded what Redis does not have yet
        try:
            while True:
                self.lock.check()
                if self.stop.requested:
                    break
                self._record_blocked(status, schedule, log)
                ready = self._startable(status, schedule.take_ready(parallel - len(running)), schedule, log)
                starting = [name for name in ready if name not in self._probes]
                for name in starting:
                    self._record(status, name, IN_PROGRESS, log)
                if changed or self._blocked or starting:
                    self._write(status)  # the step's transitions, before any task they allow starts
                    self._blocked = False
                for name in ready:
                    running[name] = Running(specs[name], time.monotonic())
                    if name in self._probes:
                        self._probe(running[name], planned.session)
                    else:
                        self._launch(running[name], planned.session, log)
                if not running:
                    break
                changed = self._step(status, running, schedule, planned.session, log)
        except BaseException as exc:
            # Fenced out, Redis gone or in doubt, or a bug: nothing more can be recorded, and no task may go on.
            self._abandon(running, "lost the run lock" if isinstance(exc, LockLostError) else type(exc).__name__,
                          log)
            if not isinstance(exc, (LockLostError, ReplicasInDoubtError)):
                self.lock.verify()  # a lost lock explains the rest (its successor stops what we left)
            raise
        if self.stop.reason is not None:
            self._interrupt(status, running, log)  # raises Interrupted
        status.completed_at = self.clock()
        status.duration_seconds = round(time.monotonic() - started, 3)
        # Done: every task completed, or skipped for the catch-up policy (a reason, never a failure's error).
        status.all_success = all(status.completed(t.name) or caught_up(status, t.name) for t in self.settings.tasks)
        self._cycle.finished_at, self._cycle.done = iso(status.completed_at), status.all_success
        ran = planned.tasks + tuple(planned.blocked)  # a task held back for the close failed nothing
        self._cycle.outcome = FAILED if any(status.tasks.get(n) in (FAILED, SKIPPED) for n in ran) else COMPLETED
        waited_only = not self._attempted and self._cycle.outcome == COMPLETED and bool(self._since)
        if waited_only:
            self._only_waited(status)
        self.store.finish(self.lock.token, status)
        self.durations.update(known_durations([status]))
        self._warn_slow(status, planned.tasks, log)
        log.bind(all_success=status.all_success, duration_seconds=status.duration_seconds,
                 completed=sum(s == COMPLETED for s in status.tasks.values()), total=len(status.tasks),
                 console=False) \
            .log("INFO" if status.all_success or waited_only else "ERROR",
                 "maintenance_cycle_waiting" if waited_only else "maintenance_cycle_finished")
        return CycleResult(planned.session, status, planned.tasks + tuple(planned.blocked), time.monotonic() - started,
                           waited_only)

    def _only_waited(self, status: SessionStatus) -> None:
        """A cycle that found only data missing is no attempt: the count stays, and its record takes the place of
        the previous such cycle's (a watcher probing every few minutes for hours keeps one)."""
        status.attempts -= 1
        self._cycle.outcome = WAITING_FOR_DATA
        earlier = status.cycles[:-1]
        if earlier and earlier[-1].outcome == WAITING_FOR_DATA:
            status.cycles = [*earlier[:-1], self._cycle]

    def _startable(self, status: SessionStatus, ready: list[str], schedule: Schedule, log) -> list[str]:
        """The ready tasks that may start now; one that must wait for the close is recorded waiting instead."""
        starting = []
        for name in ready:
            why = self.start_wait(self.settings.task(name))
            if why is None:
                starting.append(name)
                continue
            self._wait(status, name, why, log)
            schedule.failed(name)  # what runs after it waits too: recorded by _record_blocked
            self._record_blocked(status, schedule, log)
        return starting

    def _record_blocked(self, status: SessionStatus, schedule: Schedule, log) -> None:
        for name, blocker in schedule.take_blocked():
            self._blocked = True
            if blocker in self._waits:
                self._wait(status, name, waits_after(self._waits[blocker], blocker), log, self._since.get(blocker))
            else:
                self._record(status, name, SKIPPED, log, error=f"dependency {blocker} did not complete")

    def _wait(self, status: SessionStatus, name: str, why: str, log, since: str | None = None) -> None:
        """Leave `name` pending with why: the session is not done until a run after the close (or, waiting for data
        `since` then, a run whose probe finds it) starts it."""
        status.tasks[name] = PENDING
        record = status.details.setdefault(name, TaskRecord())
        record.reason, record.waiting_since = why, since
        self._waits[name] = why
        if since is not None:
            self._since[name] = since
        log.bind(task=name, reason=why).info("task_waiting")
        self._blocked = True

    # --- attempts ----------------------------------------------------------------------

    def _probe(self, task: Running, session: dt.date) -> None:
        """Ask the task's wait_for probe whether its data is there (a command under the supervisor, bounded)."""
        task.probing = True
        task.attempt_id = AttemptId(session, task.spec.name, PROBE)
        task.deadline = time.monotonic() + self._probe_limit(task.spec)
        self.processes.start(task.attempt_id, command_request(task.spec, session, self.lock.run_id,
                                                               task.spec.wait_for))

    @staticmethod
    def _probe_limit(spec: TaskSpec) -> float:
        """A probe is stopped after PROBE_TIMEOUT, or the task's own timeout when that is shorter."""
        return min(PROBE_TIMEOUT, spec.timeout or PROBE_TIMEOUT)

    def _probed(self, status: SessionStatus, task: Running, event: Ended, schedule: Schedule,
                running: dict[str, Running], session: dt.date, log) -> None:
        """The probe ended: start the task, or leave it waiting for data, or fail it when its wait is over."""
        name, spec = task.spec.name, task.spec
        task.probing, task.attempt_id, task.deadline = False, None, None
        until = self._probes.pop(name)
        outcome = command_outcome(spec, event, program=spec.wait_for[0])
        if outcome.success:
            log.bind(task=name).info("data_ready")
            self._record(status, name, IN_PROGRESS, log)
            self._write(status)  # in progress in Redis before its process starts, as for every task
            self._launch(task, session, log)
            return
        del running[name]
        now = self.clock()
        record = status.details.setdefault(name, TaskRecord())
        since = parse_time(record.waiting_since) or now
        broken = isinstance(event.result, dict) and "exec_error" in event.result  # no data will change that
        if broken or now >= until:
            why = f"its wait_for probe cannot run ({outcome.error})" if broken else \
                f"still waiting for data after {span_text((now - since).total_seconds())} ({outcome.error}); " \
                f"its wait ended at {self._local(until)}"
            self._finish_task(status, name, Outcome(False, why, outcome.output), 0, time.monotonic() - task.started,
                              log)
            schedule.failed(name)
            return
        log.bind(task=name, probe=scrub(outcome.error or ""), until=iso(until)).info("data_not_ready")
        self._wait(status, name, f"waits for data ({scrub(outcome.error or 'not yet')}) until {self._local(until)}",
                   log, iso(since))
        schedule.failed(name)  # what runs after it waits too: recorded by _record_blocked

    def _local(self, moment: dt.datetime) -> str:
        local = moment.astimezone(self.tz)
        return f"{local:%Y-%m-%d %H:%M} {getattr(self.tz, 'key', local.tzname())}"

    def _launch(self, task: Running, session: dt.date, log) -> None:
        spec = task.spec
        self._attempted = True
        task.attempt += 1
        task.attempt_id = AttemptId(session, spec.name, task.attempt)
        task.retry_at = None
        task.stopping = False
        task.deadline = time.monotonic() + spec.timeout if spec.timeout else None
        task.record = AttemptRecord(spec.name, task.attempt, iso(self.clock()))
        self._cycle.add_attempt(task.record)
        make = command_request if spec.command else python_request
        self.processes.start(task.attempt_id, make(spec, session, self.lock.run_id))
        if task.attempt > 1:
            log.bind(task=spec.name, attempt=task.attempt).info("task_starting")

    def _step(self, status: SessionStatus, running: dict[str, Running], schedule: Schedule, session: dt.date,
              log) -> bool:
        """Wait for what comes first (an attempt ended, a timeout, a retry due, POLL_SECONDS) and act on it.

        True when it recorded something in `status` that Redis does not have yet: an attempt
        ended (the task's transition, or the attempt alone when the task retries), a retry began.
        """
        changed = False
        now = time.monotonic()
        timers = [t for task in running.values() for t in (task.deadline, task.retry_at) if t is not None]
        wait = max(0.0, min([POLL_SECONDS, *(t - now for t in timers)]))
        for event in self.processes.events(wait):
            name = event.attempt.task
            task = running.get(name)
            if task is None or task.attempt_id != event.attempt:
                continue
            if task.probing:
                self._probed(status, task, event, schedule, running, session, log)
                changed = True
                continue
            outcome = _outcome(task.spec, event)
            self._attempt_ended(task, COMPLETED if outcome.success else FAILED, outcome.error)
            task.attempt_id = None
            changed = True
            if outcome.success or task.attempt > task.spec.retries or self.stop.reason or self.lock.lost.is_set():
                del running[name]
                self._finish_task(status, name, outcome, task.attempt, time.monotonic() - task.started, log)
                (schedule.completed if outcome.success else schedule.failed)(name)
                continue
            delay = task.spec.retry_delay * 2 ** (task.attempt - 1)
            task.retry_at = time.monotonic() + delay
            log.bind(task=name, attempt=task.attempt, error=scrub(outcome.error or ""), retry_in_seconds=delay) \
                .warning("task_retry")
        now = time.monotonic()
        for task in running.values():
            if task.attempt_id and task.deadline is not None and now >= task.deadline and not task.stopping:
                task.stopping = True
                limit = self._probe_limit(task.spec) if task.probing else task.spec.timeout
                self.processes.stop(task.attempt_id, f"{'its probe ' if task.probing else ''}timed out after "
                                                     f"{limit:g}s")
            elif task.attempt_id is None and task.retry_at is not None and now >= task.retry_at:
                self._launch(task, session, log)
                changed = True
        return changed

    @property
    def _stop_wait(self) -> float:
        return self.settings.run.stop_grace_seconds + STOP_MARGIN

    def _wait_ended(self, running: dict[str, Running]) -> dict[str, Ended]:
        """After a stop: wait until the supervisor reports every running attempt ended; those it did, by task."""
        ended: dict[str, Ended] = {}
        deadline = time.monotonic() + self._stop_wait
        while any(t.attempt_id and name not in ended for name, t in running.items()) and \
                time.monotonic() < deadline:
            try:
                events = self.processes.events(POLL_SECONDS)
            except TaskProcessesLostError:
                # Its reapers stop their attempts as it dies (PDEATHSIG); what they leave is found by the record.
                if self.processes.stop_remaining():
                    return ended
                return {n: Ended(t.attempt_id, stopped="its supervisor died")
                        for n, t in running.items() if t.attempt_id}
            for event in events:
                name = event.attempt.task
                if name in running and running[name].attempt_id == event.attempt:
                    ended[name] = event
        return ended

    def _abandon(self, running: dict[str, Running], why: str, log) -> None:
        """Stop every task of the cycle and wait until no process of it is left; nothing is recorded."""
        self.processes.stop_all(f"its runner stopped: {why}")
        ended = self._wait_ended(running)
        self._unstopped([n for n, t in running.items() if t.attempt_id and n not in ended], log)

    def _unstopped(self, names: list[str], log) -> None:
        """Tasks whose processes outlived every signal: the lock stays theirs until its lease runs out."""
        if names:
            log.bind(tasks=names, console=False).error("task_processes_not_stopped")
            self.lock.keep()

    def _interrupt(self, status: SessionStatus, running: dict[str, Running], log) -> None:
        """Stop the running tasks, wait until they are gone, record them as interrupted, and stop."""
        why = f"interrupted by {self.stop.reason}"
        self.processes.stop_all(why)
        ended = self._wait_ended(running)
        for name, task in running.items():
            event = ended.get(name)
            if task.probing and (event is not None or not task.attempt_id):
                status.tasks[name] = PENDING  # it was only being probed: it never started
                continue
            outcome = _outcome(task.spec, event) if event is not None else None
            if outcome is not None and outcome.success:  # it completed before the signal reached it
                self._attempt_ended(task, COMPLETED, None)
                self._finish_task(status, name, outcome, task.attempt, time.monotonic() - task.started, log)
                continue
            status.tasks[name] = FAILED
            record = status.details.setdefault(name, TaskRecord())
            record.error = why if event is not None or not task.attempt_id else \
                f"{why}; its processes did not end within {self._stop_wait:g}s"
            if task.attempt_id:
                self._attempt_ended(task, INTERRUPTED_ATTEMPT, record.error)
            record.attempts += task.attempt
            record.finished_at = iso(self.clock())
            log.bind(task=name, console=False).error("task_interrupted")
        self._unstopped([n for n, t in running.items() if t.attempt_id and n not in ended], log)
        status.interrupted = self.stop.reason
        self._cycle.finished_at, self._cycle.outcome = iso(self.clock()), why
        self._write(status)
        log.bind(signal=status.interrupted).warning("maintenance_cycle_interrupted")
        raise Interrupted(self.stop.reason, self.stop.exit_code)

    # --- the document --------------------------------------------------------------

    def _begin(self, planned: PlannedSession, existing: SessionStatus | None, known: dict[str, float],
               log) -> SessionStatus:
        if existing is not None and existing.corrupt:
            log.bind(error=existing.corrupt).warning("status_document_unreadable")
            existing = None
        status = existing or SessionStatus(planned.session)
        left = [name for name, state in status.tasks.items() if state == IN_PROGRESS]
        if left:
            self._stop_leftovers(status, left, log)
        for name in left:
            # Only lock holders write, and we hold the lock: its runner died or was stopped.
            log.bind(task=name, previous_run_id=status.run_id).warning("interrupted_task_detected")
            if name not in planned.tasks:
                status.tasks[name] = FAILED
                status.details.setdefault(name, TaskRecord()).error = "interrupted: its runner stopped"
        for task in self.settings.tasks:
            status.tasks.setdefault(task.name, PENDING)
        for name in planned.tasks:
            # Attempts count across the cycles of a session, and so does a wait for data; the rest describes
            # this cycle.
            previous = status.details.get(name)
            waited = previous.waiting_since if previous and status.tasks.get(name) != COMPLETED else None
            status.tasks[name] = PENDING
            status.details[name] = TaskRecord(attempts=previous.attempts if previous else 0,
                                              waiting_since=waited if name in planned.probes else None)
        self._waits = dict(planned.waiting)
        self._probes, self._since, self._attempted = dict(planned.probes), {}, False
        for name, reason in {**planned.catchup_skipped, **planned.waiting, **planned.blocked}.items():
            previous = status.details.get(name)
            attempts = previous.attempts if previous else 0
            if name in planned.blocked:
                status.tasks[name] = SKIPPED
                status.details[name] = TaskRecord(attempts=attempts, error=reason)
                log.bind(task=name, reason=reason, console=False).error("task_skipped")
            else:
                status.tasks[name] = SKIPPED if name in planned.catchup_skipped else PENDING
                status.details[name] = TaskRecord(attempts=attempts, reason=reason)
        status.started_at = status.started_at or self.clock()  # the session's first start, kept by a re-run
        status.completed_at = None
        status.duration_seconds = None
        status.all_success = False
        status.interrupted = None
        status.attempts += 1
        status.run_id = self.lock.run_id
        status.runner = f"{socket.gethostname()}:{os.getpid()}"
        status.task_list = task_list(self.settings.tasks)
        self._begin_cycle(status)
        self._write(status)
        log.bind(tasks=list(planned.tasks), attempt=status.attempts, reason=planned.reason,
                 expected_seconds=self._usual_seconds(planned.tasks, known)) \
            .info("starting_maintenance_cycle")
        return status

    def _begin_cycle(self, status: SessionStatus) -> None:
        """Close the previous cycle if its runner died in it, and open this one's record: who, from where, why."""
        previous = status.cycle
        if previous is not None and previous.finished_at is None:
            previous.outcome = previous.outcome or RUNNER_STOPPED
            for attempt in previous.attempts:
                if attempt.outcome is None:
                    attempt.outcome = INTERRUPTED_ATTEMPT
        t = self.trigger
        self._cycle = CycleRecord(iso(self.clock()), trigger=t.command, force=t.force, only=list(t.only),
                                  user=who(), host=socket.gethostname(), run_id=self.lock.run_id)
        status.begin_cycle(self._cycle)

    def _attempt_ended(self, task: Running, outcome: str, error: str | None) -> None:
        """The attempt's end in the cycle's record (written with the document's next whole write)."""
        if task.record is not None:
            task.record.finished_at, task.record.outcome = iso(self.clock()), outcome
            task.record.error = cap_error(scrub(error)) if error and outcome != COMPLETED else None

    def _usual_seconds(self, tasks, known: dict[str, float]) -> dict[str, float]:
        """What each task usually takes, for the live view's time left: its median over the lookback, else its
        last known duration (the same figures as `status --task` and the window at risk)."""
        return {**{n: known[n] for n in tasks if n in known}, **median_durations(self.history, tasks)}

    def _stop_leftovers(self, status: SessionStatus, tasks: list[str], log) -> None:
        """Tasks left in progress by a run that died: on this host, make sure none of its processes still runs.

        Its supervisor stopped them unless it was killed too; then its processes are found by
        the run id in their environment. On another host nothing can be checked from here.
        """
        host = (status.runner or "").rpartition(":")[0]
        if not status.run_id or status.run_id == self.lock.run_id or host != socket.gethostname():
            return
        pids = stop_leftovers(status.run_id, self.settings.run.stop_grace_seconds)
        if pids:
            log.bind(previous_run_id=status.run_id, pids=pids, tasks=tasks).warning("leftover_processes_stopped")

    def _record(self, status: SessionStatus, name: str, state: str, log, error: str | None = None) -> None:
        status.tasks[name] = state
        record = status.details.setdefault(name, TaskRecord())
        if state == IN_PROGRESS:
            record.started_at = iso(self.clock())
            log.bind(task=name, attempt=record.attempts + 1).info("task_starting")
        elif state == SKIPPED:
            record.error = error
            log.bind(task=name, reason=error, console=False).error("task_skipped")

    def _write(self, status: SessionStatus) -> None:
        self.store.write(self.lock.token, status)

    def _finish_task(self, status: SessionStatus, name: str, outcome: Outcome, attempts: int, seconds: float,
                     log) -> None:
        record = status.details.setdefault(name, TaskRecord())
        record.finished_at = iso(self.clock())
        record.duration_seconds = round(seconds, 3)
        record.attempts += attempts
        # What a task reports is stored and read back: scrubbed, and nothing the safe JSON reader would refuse.
        record.result = scrub_value(safejson.sanitized(outcome.result)) if outcome.result is not None else None
        status.tasks[name] = COMPLETED if outcome.success else FAILED
        task_log = log.bind(task=name, duration_seconds=record.duration_seconds, attempts=record.attempts)
        if outcome.success:
            record.error = record.output = record.traceback = None
            task_log.bind(result=record.result, output=_tail(outcome.output, LOG_OUTPUT_LIMIT)) \
                .info("task_completed")
        else:
            # The status document is read by `status` and other tools: no password goes there either.
            record.error = scrub(outcome.error or "failed")
            record.output = _tail(scrub(outcome.output or ""), STATUS_OUTPUT_LIMIT)  # whole secrets, then the cut
            record.traceback = scrub(outcome.traceback) if outcome.traceback else None
            task_log.bind(error=outcome.error, output=_tail(outcome.output, LOG_OUTPUT_LIMIT),
                          traceback=outcome.traceback, console=False).error("task_failed")

    def _warn_slow(self, status: SessionStatus, ran: tuple[str, ...], log) -> None:
        """A task that took more than `slow_factor` times its median over the lookback is worth a warning."""
        statuses = {**self.history, status.session: status}
        for trend in slow_tasks([n for n in ran if status.tasks.get(n) == COMPLETED], statuses, self.settings.run):
            log.bind(task=trend.task, duration_seconds=trend.latest.completed_in, median_seconds=trend.median_seconds,
                     ratio=trend.ratio, slow_factor=trend.slow_factor, sessions=len(trend.durations), console=False) \
                .warning("task_slower_than_usual")


def _outcome(spec: TaskSpec, ended: Ended) -> Outcome:
    return command_outcome(spec, ended) if spec.command else python_outcome(ended)


def _tail(text: str | None, limit: int) -> str | None:
    if not text:
        return None
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    newline = cut.find("\n")
    return "..." + (cut[newline + 1:] if 0 <= newline < len(cut) - 1 else cut)  # whole lines only
