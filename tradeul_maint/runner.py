"""Running one cycle of one session: the task graph, parallelism, retries, signals and state.

The runner owns threads, processes and signals; tasks see only their context. Each running
task has a thread of its own (a worker, reused for the next task) while the main thread
schedules (schedule.py) and records. Every transition (in_progress, completed, failed,
skipped) is in Redis, fenced on the run lock, before anything that depends on it happens:
the transitions of one scheduling step (the tasks that just ended, those they block, those
that now start) go out together in one round trip, before the new tasks start. So a crash
loses nothing that completed, a runner that lost the lock stops instead of overwriting its
successor, and a cycle of many short tasks pays one small write per step rather than one
rewrite of the whole status document per transition (store.py).
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
from tradeul_maint.schedule import Schedule, known_durations, priority_order
from tradeul_maint.settings import Settings, TaskSpec
from tradeul_maint.state import (COMPLETED, FAILED, IN_PROGRESS, PENDING, SKIPPED, SessionStatus, TaskRecord,
                                 iso)
from tradeul_maint.store import Slots, StateStore
from tradeul_maint.tasks import Outcome, ProcessGroups, TaskContext, run_command, run_python

Clock = Callable[[], dt.datetime]
STATUS_OUTPUT_LIMIT = 4096  # characters of a failed command's output kept in the status document
LOG_OUTPUT_LIMIT = 16384
STOP_GRACE = 10.0  # seconds to let running tasks end after a signal before giving up on them
WHOLE_WRITE_SECONDS = 1.0  # while tasks complete, the status document is rewritten whole at least this often


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
    # Each task's last known duration, from earlier sessions and this run's cycles: the priorities.
    durations: dict[str, float] = field(default_factory=dict)
    _changed: set[str] = field(default_factory=set, init=False)  # tasks recorded in memory, not yet in Redis
    _written: float = field(default=0.0, init=False)  # when the document was last written whole (monotonic)
    _slots: Slots = field(default_factory=dict, init=False)  # where its states sit, for `store.record`

    def run_cycle(self, planned: PlannedSession, existing: SessionStatus | None) -> CycleResult:
        """Run the planned tasks of one session and record the outcome; raises Interrupted on a signal."""
        log = logger.bind(date=planned.session.isoformat(), run_id=self.lock.run_id)
        started = time.monotonic()
        specs = {t.name: t for t in self.settings.tasks}
        parallel = self.settings.run.max_parallel
        order = priority_order(planned.tasks, specs, {**self.durations, **known_durations([existing])}, parallel)
        status = self._begin(planned, existing, log)
        schedule = Schedule(order, specs, done_before={name for name, state in status.tasks.items()
                                                       if state == COMPLETED and name not in planned.tasks})
        running: set[str] = set()
        done: queue.Queue[tuple[str, Outcome, int, float]] = queue.Queue()
        workers = Workers()
        try:
            while True:
                self.lock.check()
                if self.stop.signum is not None:
                    break
                for name, blocker in schedule.take_blocked():
                    self._record(status, name, SKIPPED, log, error=f"dependency {blocker} did not complete")
                starting = schedule.take_ready(parallel - len(running))
                for name in starting:
                    self._record(status, name, IN_PROGRESS, log)
                self._commit(status)  # the step's transitions, before any task they allow starts
                for name in starting:
                    self._start(specs[name], planned.session, workers, done, log)
                    running.add(name)
                if not running:
                    break
                try:
                    ended = [done.get(timeout=0.2)]
                except queue.Empty:
                    continue
                while True:  # and every other task that ended meanwhile: one write for them all
                    try:
                        ended.append(done.get_nowait())
                    except queue.Empty:
                        break
                for name, outcome, attempts, seconds in ended:
                    running.discard(name)
                    self._finish_task(status, name, outcome, attempts, seconds, log)
                    if outcome.success:
                        schedule.completed(name)
                    else:
                        schedule.failed(name)
        except BaseException as exc:
            # Fenced out, Redis gone, or a bug: this cycle cannot record anything more, so no task
            # of it may go on as an orphan.
            self.groups.stop_all("lost lock" if isinstance(exc, LockLostError) else type(exc).__name__)
            workers.close()
            raise
        try:
            if self.stop.signum is not None and (schedule.pending or running):
                self._interrupt(status, running, done, log)
        finally:
            workers.close()
        status.completed_at = self.clock()
        status.duration_seconds = round(time.monotonic() - started, 3)
        status.all_success = all(status.tasks.get(t.name) == COMPLETED or
                                 (status.tasks.get(t.name) == SKIPPED and t.name in planned.catchup_skipped)
                                 for t in self.settings.tasks)
        self.store.finish(self.lock.token, status)
        self._changed.clear()
        self.durations.update(known_durations([status]))
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
        self._write_whole(status)
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
        self._changed.add(name)

    def _commit(self, status: SessionStatus) -> None:
        """What was recorded since the last write, in one round trip: the document whole if a second has passed."""
        if not self._changed:
            return
        if time.monotonic() - self._written < WHOLE_WRITE_SECONDS and \
                self.store.record(self.lock.token, status, self._changed, self._slots):
            self._changed.clear()
        else:
            self._write_whole(status)

    def _write_whole(self, status: SessionStatus) -> None:
        self._slots = self.store.write(self.lock.token, status)
        self._changed.clear()
        self._written = time.monotonic()

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
        self._changed.add(name)

    def _interrupt(self, status: SessionStatus, running: set[str], done: queue.Queue,
                   log) -> None:
        """Let the running tasks notice the signal, record them as not completed, and stop."""
        deadline = time.monotonic() + STOP_GRACE
        while running and time.monotonic() < deadline:
            try:
                name, outcome, attempts, seconds = done.get(timeout=0.1)
            except queue.Empty:
                continue
            running.discard(name)
            if outcome.success:
                self._finish_task(status, name, outcome, attempts, seconds, log)
        why = f"interrupted by {signal.Signals(self.stop.signum).name}"
        for name in [n for n, s in status.tasks.items() if s == IN_PROGRESS]:
            status.tasks[name] = FAILED
            status.details.setdefault(name, TaskRecord()).error = why
            log.bind(task=name, console=False).error("task_interrupted")
        status.interrupted = signal.Signals(self.stop.signum).name
        self._write_whole(status)
        log.bind(signal=status.interrupted).warning("maintenance_cycle_interrupted")
        raise Interrupted(self.stop.signum)

    # --- tasks -------------------------------------------------------------------------

    def _start(self, spec: TaskSpec, session: dt.date, workers: Workers, done: queue.Queue, log) -> None:
        ctx = TaskContext(date=session, task=spec.name, run_id=self.lock.run_id, redis=self.redis_client,
                          logger=log.bind(task=spec.name), params=dict(spec.params))
        workers.run(lambda: self._attempts(spec, ctx), done)

    def _attempts(self, spec: TaskSpec, ctx: TaskContext) -> tuple[str, Outcome, int, float]:
        """All attempts of one task within this cycle: `retries` more after a failure, delay doubling."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                outcome = run_command(spec, ctx, self.groups) if spec.command else run_python(spec, ctx, self.settings.python_paths)
            except BaseException as exc:  # nothing a task does may end this worker without an outcome
                outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
            if outcome.success or attempt > spec.retries or self.stop.event.is_set() or self.lock.lost.is_set():
                break
            delay = spec.retry_delay * 2 ** (attempt - 1)
            ctx.logger.bind(attempt=attempt, error=outcome.error, retry_in_seconds=delay).warning("task_retry")
            if self.stop.event.wait(delay):
                break
        return spec.name, outcome, attempt, time.monotonic() - started


class Workers:
    """The threads a cycle's tasks run in: one to each running task, reused for the next.

    Starting a thread costs about as much as running a short task, so a cycle of many
    keeps its threads: a worker says it is free before it hands its task's outcome over,
    so the task the runner starts next finds it. A task that outlives its cycle (abandoned
    after a signal or a lost lock) keeps its worker, which ends after it.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._free = 0
        self._count = 0
        self._lock = threading.Lock()

    def run(self, job: Callable[[], object], done: queue.Queue) -> None:
        """Run `job` in a worker of its own and put what it returns on `done`."""
        with self._lock:
            spawn = self._free == 0
            if spawn:
                self._count += 1
            else:
                self._free -= 1
        if spawn:
            threading.Thread(target=self._work, name=f"task-worker-{self._count}", daemon=True).start()
        self._jobs.put((job, done))

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, done = item
            result = job()
            with self._lock:
                self._free += 1
            done.put(result)

    def close(self) -> None:
        """Let every worker end as soon as it is free."""
        with self._lock:
            count = self._count
        for _ in range(count):
            self._jobs.put(None)


def _tail(text: str | None, limit: int) -> str | None:
    if not text:
        return None
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    newline = cut.find("\n")
    return "..." + (cut[newline + 1:] if 0 <= newline < len(cut) - 1 else cut)  # whole lines only
