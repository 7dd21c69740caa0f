"""Running one cycle of one session: the task graph, parallelism, retries, signals and state.

The runner owns threads, processes and signals; tasks see only their context. Each task
attempt runs in a thread of its own while the main thread schedules and records: every
transition (in_progress, completed, failed, skipped) is written to the status document
when it happens, fenced on the run lock, so a crash loses nothing that completed and a
runner that lost the lock stops instead of overwriting its successor.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from loguru import logger

from tradeul_maint.errors import LockLostError
from tradeul_maint.lock import RunLock
from tradeul_maint.logs import scrub
from tradeul_maint.planner import PlannedSession
from tradeul_maint.settings import Settings, TaskSpec
from tradeul_maint.state import (COMPLETED, FAILED, IN_PROGRESS, PENDING, SKIPPED, SessionStatus, TaskRecord,
                                 iso)
from tradeul_maint.store import StateStore
from tradeul_maint.tasks import Outcome, ProcessGroups, TaskContext, run_command, run_python

Clock = Callable[[], dt.datetime]
STATUS_OUTPUT_LIMIT = 4096  # characters of a failed command's output kept in the status document
LOG_OUTPUT_LIMIT = 16384
STOP_GRACE = 10.0  # seconds to let running tasks end after a signal before giving up on them


class Interrupted(Exception):
    """The cycle was stopped by SIGTERM or SIGINT; its state says what did not complete."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class CycleResult:
    session: dt.date
    status: SessionStatus
    ran: tuple[str, ...]
    seconds: float

    @property
    def failures(self) -> dict[str, str]:
        return {name: self.status.details.get(name, TaskRecord()).error or state
                for name, state in self.status.tasks.items() if state in (FAILED, SKIPPED)
                and name in self.ran}

    @property
    def success(self) -> bool:
        return self.status.done


class StopSignals:
    """Turns SIGTERM/SIGINT into a stop request: running command groups get SIGTERM at once."""

    def __init__(self, groups: ProcessGroups):
        self.groups = groups
        self.signum: int | None = None
        self.event = threading.Event()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = self.signum or signum
        self.event.set()
        self.groups.stop_all(signal.Signals(signum).name)

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class Runner:
    settings: Settings
    store: StateStore
    lock: RunLock
    clock: Clock
    redis_client: object
    stop: StopSignals
    groups: ProcessGroups = field(default_factory=ProcessGroups)

    def run_cycle(self, planned: PlannedSession, existing: SessionStatus | None) -> CycleResult:
        """Run the planned tasks of one session and record the outcome; raises Interrupted on a signal."""
        log = logger.bind(date=planned.session.isoformat(), run_id=self.lock.run_id)
        started = time.monotonic()
        specs = {t.name: t for t in self.settings.tasks}
        pending = list(planned.tasks)
        if self.settings.run.max_parallel > 1:
            pending = _by_priority(pending, specs, existing or SessionStatus(planned.session))
        status = self._begin(planned, existing, log)
        running: dict[str, threading.Thread] = {}
        done: queue.Queue[tuple[str, Outcome, int, float]] = queue.Queue()
        try:
            while pending or running:
                self.lock.check()
                if self.stop.signum is not None:
                    break
                for name in list(pending):
                    blocker = self._blocker(specs[name], status, planned)
                    if blocker:
                        pending.remove(name)
                        self._record(status, name, SKIPPED, log, error=f"dependency {blocker} did not complete")
                ready = [n for n in pending if all(status.tasks.get(d) == COMPLETED for d in specs[n].after)]
                for name in ready[: self.settings.run.max_parallel - len(running)]:
                    pending.remove(name)
                    self._record(status, name, IN_PROGRESS, log)
                    running[name] = self._start(specs[name], planned.session, done, log)
                if not running:
                    break
                try:
                    name, outcome, attempts, seconds = done.get(timeout=0.2)
                except queue.Empty:
                    continue
                running.pop(name).join()
                self._finish_task(status, name, outcome, attempts, seconds, log)
        except BaseException as exc:
            # Fenced out, Redis gone, or a bug: this cycle cannot record anything more, so no task
            # of it may go on as an orphan.
            self.groups.stop_all("lost lock" if isinstance(exc, LockLostError) else type(exc).__name__)
            raise
        if self.stop.signum is not None and (pending or running):
            self._interrupt(status, running, done, log)
        status.completed_at = self.clock()
        status.duration_seconds = round(time.monotonic() - started, 3)
        status.all_success = all(status.tasks.get(t.name) == COMPLETED or
                                 (status.tasks.get(t.name) == SKIPPED and t.name in planned.catchup_skipped)
                                 for t in self.settings.tasks)
        self.store.finish(self.lock.token, status)
        log.bind(all_success=status.all_success, duration_seconds=status.duration_seconds,
                 completed=sum(s == COMPLETED for s in status.tasks.values()), total=len(status.tasks),
                 console=False) \
            .log("INFO" if status.all_success else "ERROR", "maintenance_cycle_finished")
        return CycleResult(planned.session, status, planned.tasks, time.monotonic() - started)

    # --- the document --------------------------------------------------------------

    def _begin(self, planned: PlannedSession, existing: SessionStatus | None, log) -> SessionStatus:
        if existing is not None and existing.corrupt:
            log.bind(error=existing.corrupt).warning("status_document_unreadable")
            existing = None
        status = existing or SessionStatus(planned.session)
        for name, state in list(status.tasks.items()):
            if state == IN_PROGRESS:
                # Only lock holders write, and we hold the lock: its runner died or was stopped.
                log.bind(task=name, previous_run_id=status.run_id).warning("interrupted_task_detected")
                if name not in planned.tasks:
                    status.tasks[name] = FAILED
                    status.details.setdefault(name, TaskRecord()).error = "interrupted: its runner stopped"
        for task in self.settings.tasks:
            status.tasks.setdefault(task.name, PENDING)
        for name in planned.tasks:
            status.tasks[name] = PENDING
            status.details[name] = TaskRecord()
        for name, reason in planned.catchup_skipped.items():
            status.tasks[name] = SKIPPED
            status.details[name] = TaskRecord(reason=reason)
        status.started_at = self.clock()
        status.completed_at = None
        status.duration_seconds = None
        status.all_success = False
        status.interrupted = None
        status.attempts += 1
        status.run_id = self.lock.run_id
        status.runner = f"{socket.gethostname()}:{os.getpid()}"
        self.store.write(self.lock.token, status)
        log.bind(tasks=list(planned.tasks), attempt=status.attempts, reason=planned.reason) \
            .info("starting_maintenance_cycle")
        return status

    def _record(self, status: SessionStatus, name: str, state: str, log, error: str | None = None) -> None:
        status.tasks[name] = state
        record = status.details.setdefault(name, TaskRecord())
        if state == IN_PROGRESS:
            record.started_at = iso(self.clock())
            log.bind(task=name).info("task_starting")
        elif state == SKIPPED:
            record.error = error
            log.bind(task=name, reason=error, console=False).error("task_skipped")
        self.store.write(self.lock.token, status)

    def _finish_task(self, status: SessionStatus, name: str, outcome: Outcome, attempts: int, seconds: float,
                     log) -> None:
        record = status.details.setdefault(name, TaskRecord())
        record.finished_at = iso(self.clock())
        record.duration_seconds = round(seconds, 3)
        record.attempts = attempts
        record.result = outcome.result
        status.tasks[name] = COMPLETED if outcome.success else FAILED
        task_log = log.bind(task=name, duration_seconds=record.duration_seconds, attempts=attempts)
        if outcome.success:
            record.error = record.output = None
            task_log.bind(result=outcome.result, output=_tail(outcome.output, LOG_OUTPUT_LIMIT)) \
                .info("task_completed")
        else:
            # The status document is read by `status` and other tools: no password goes there either.
            record.error = scrub(outcome.error or "failed")
            record.output = scrub(_tail(outcome.output, STATUS_OUTPUT_LIMIT) or "") or None
            task_log.bind(error=outcome.error, output=_tail(outcome.output, LOG_OUTPUT_LIMIT), console=False) \
                .error("task_failed")
        self.store.write(self.lock.token, status)

    def _interrupt(self, status: SessionStatus, running: dict[str, threading.Thread], done: queue.Queue,
                   log) -> None:
        """Let the running tasks notice the signal, record them as not completed, and stop."""
        deadline = time.monotonic() + STOP_GRACE
        while running and time.monotonic() < deadline:
            try:
                name, outcome, attempts, seconds = done.get(timeout=0.1)
            except queue.Empty:
                continue
            running.pop(name)
            if outcome.success:
                self._finish_task(status, name, outcome, attempts, seconds, log)
        why = f"interrupted by {signal.Signals(self.stop.signum).name}"
        for name in [n for n, s in status.tasks.items() if s == IN_PROGRESS]:
            status.tasks[name] = FAILED
            status.details.setdefault(name, TaskRecord()).error = why
            log.bind(task=name, console=False).error("task_interrupted")
        status.interrupted = signal.Signals(self.stop.signum).name
        self.store.write(self.lock.token, status)
        log.bind(signal=status.interrupted).warning("maintenance_cycle_interrupted")
        raise Interrupted(self.stop.signum)

    # --- tasks -------------------------------------------------------------------------

    def _blocker(self, spec: TaskSpec, status: SessionStatus, planned: PlannedSession) -> str | None:
        """The dependency that stops this task from ever running in this cycle, if any."""
        for dep in spec.after:
            state = status.tasks.get(dep)
            if state in (FAILED, SKIPPED) or (state != COMPLETED and dep not in planned.tasks):
                return dep
        return None

    def _start(self, spec: TaskSpec, session: dt.date, done: queue.Queue, log) -> threading.Thread:
        ctx = TaskContext(date=session, task=spec.name, run_id=self.lock.run_id, redis=self.redis_client,
                          logger=log.bind(task=spec.name), params=dict(spec.params))
        thread = threading.Thread(target=self._attempts, args=(spec, ctx, done), name=f"task-{spec.name}",
                                  daemon=True)
        thread.start()
        return thread

    def _attempts(self, spec: TaskSpec, ctx: TaskContext, done: queue.Queue) -> None:
        """All attempts of one task within this cycle: `retries` more after a failure, delay doubling."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                outcome = run_command(spec, ctx, self.groups) if spec.command else run_python(spec, ctx)
            except Exception as exc:  # a bug in a task adapter must not kill the runner
                outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
            if outcome.success or attempt > spec.retries or self.stop.event.is_set() or self.lock.lost.is_set():
                break
            delay = spec.retry_delay * 2 ** (attempt - 1)
            ctx.logger.bind(attempt=attempt, error=outcome.error, retry_in_seconds=delay).warning("task_retry")
            if self.stop.event.wait(delay):
                break
        done.put((spec.name, outcome, attempt, time.monotonic() - started))


def _by_priority(names: list[str], specs: dict[str, TaskSpec], status: SessionStatus) -> list[str]:
    """Longest remaining path first, weighted by each task's last known duration (1 s when unknown).

    With max_parallel > 1 this starts the critical path early, which is what minimises
    the cycle's wall time; with one worker it keeps configuration order among equals.
    """
    planned = set(names)
    dependents: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        for dep in specs[n].after:
            if dep in planned:
                dependents[dep].append(n)
    rank: dict[str, float] = {}

    def path(n: str) -> float:
        if n not in rank:
            known = status.details.get(n)
            own = known.duration_seconds if known and known.duration_seconds else 1.0
            rank[n] = own + max((path(c) for c in dependents[n]), default=0.0)
        return rank[n]

    order = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (-path(n), order[n]))


def _tail(text: str | None, limit: int) -> str | None:
    if not text:
        return None
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    newline = cut.find("\n")
    return "..." + (cut[newline + 1:] if 0 <= newline < len(cut) - 1 else cut)  # whole lines only
