"""Running one cycle of one session: the task graph, parallelism, retries, timeouts, signals and state.

The runner owns the state and the signals; the run's supervisor (run/supervisor.py) owns the
task processes. The main thread schedules (plan/schedule.py), asks the supervisor to start
attempts, waits for it to report how they ended (or for a timeout or a retry to fall
due), and records. Every transition (in_progress, completed, failed, skipped) is in
Redis, fenced on the run lock, before anything that depends on it happens: the
transitions of one scheduling step (the tasks that just ended, those they block, those
that now start) go out together in one write of the whole status document, before the
new tasks start (state/store.py). So a crash loses nothing that completed, a runner that lost
the lock stops instead of overwriting its successor, and the document is the session's
state at every moment. With `[redis] min_replicas`, a write the replicas did not confirm
in time (redisio/replicas.py) ends the cycle as a lost lock does: no further task starts.

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
import time
from dataclasses import dataclass, field
from typing import Callable

from loguru import logger

from tradeul_maint.base.errors import LockLostError, ReplicasInDoubtError, TaskProcessesLostError
from tradeul_maint.base.redact import scrub
from tradeul_maint.config.settings import Settings, TaskSpec
from tradeul_maint.plan.planner import PlannedSession, span_text
from tradeul_maint.plan.schedule import Schedule, known_durations, priority_order
from tradeul_maint.run.messages import AttemptId, Ended
from tradeul_maint.run.processes import STOP_MARGIN, TaskProcesses
from tradeul_maint.run.events import Listener, ignore
from tradeul_maint.run.recorder import Recorder, Trigger
from tradeul_maint.run.result import CycleResult
from tradeul_maint.run.stopping import Interrupted, StopSignals
from tradeul_maint.run.tasks import Outcome, command_outcome, command_request, python_outcome, python_request
from tradeul_maint.state.document import (COMPLETED, FAILED, IN_PROGRESS, PENDING, AttemptRecord, SessionStatus,
                                          TaskRecord, iso, parse_time)
from tradeul_maint.state.lock import RunLock
from tradeul_maint.state.store import StateStore

Clock = Callable[[], dt.datetime]
POLL_SECONDS = 0.2  # the longest the main thread waits before it looks at signals and the lock again
PROBE_TIMEOUT = 60.0  # seconds a wait_for probe may take (less if its task's timeout is less); one that takes
# longer is stopped, and means "not yet"
PROBE = 0  # the number of a task's wait_for probe in its AttemptId: its attempts count from 1


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
    """The cycle's loop: what starts when, its attempts, retries, timeouts and probes, and how it stops.

    What the cycle records (the status document, the log, the screen) is its Recorder's. Some
    250 lines, past the usual 200, because the loop's parts (starting, a step, a probe's end,
    stopping) all act on one cycle's running tasks and schedule within one turn; split apart,
    that state would be passed between objects at every step.
    """

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
    listener: Listener = ignore  # a screen that shows the cycle as it goes (cli/live.py)
    _book: Recorder | None = field(default=None, init=False)  # this cycle's
    _probes: dict[str, dt.datetime] = field(default_factory=dict, init=False)  # not probed yet: until when to wait

    def run_cycle(self, planned: PlannedSession, existing: SessionStatus | None) -> CycleResult:
        """Run the planned tasks of one session and record the outcome; raises Interrupted on a signal."""
        try:
            return self._cycle(planned, existing)
        finally:
            if self._book is not None:
                self._book.say()  # the log lines held when it ended, however it ended

    def _cycle(self, planned: PlannedSession, existing: SessionStatus | None) -> CycleResult:
        log = logger.bind(date=planned.session.isoformat(), run_id=self.lock.run_id, job=self.settings.job)
        started = time.monotonic()
        specs = {t.name: t for t in self.settings.tasks}
        parallel = self.settings.run.max_parallel
        known = {**self.durations, **known_durations([existing])}
        order = priority_order(planned.tasks, specs, known, parallel)
        book = self._book = Recorder(self.settings, self.store, self.lock, self.clock, self.trigger, self.history,
                                     log, self.listener)
        status = book.begin(planned, existing, known)
        self._probes = dict(planned.probes)
        schedule = Schedule(order, specs, done_before={name for name, state in status.tasks.items()
                                                       if state == COMPLETED and name not in planned.tasks})
        running: dict[str, Running] = {}
        changed = False  # the last step recorded what Redis does not have yet
        try:
            while True:
                self.lock.check()
                if self.stop.requested:
                    break
                book.record_blocked(schedule)
                ready = self._startable(schedule.take_ready(parallel - len(running)), schedule)
                starting = [name for name in ready if name not in self._probes]
                for name in starting:
                    book.record(name, IN_PROGRESS)
                for name in ready:
                    running[name] = Running(specs[name], time.monotonic())
                    if name in self._probes:
                        self._probe(running[name], planned.session)
                    else:
                        self._launch(running[name], planned.session)
                if changed or book.blocked or starting:
                    # The step's transitions (and log lines) while its tasks get ready; none runs before they are in.
                    book.write()
                    self.processes.open_gate()
                if not running:
                    break
                changed = self._step(running, schedule, planned.session)
        except BaseException as exc:
            # Fenced out, Redis gone or in doubt, or a bug: nothing more can be recorded, and no task may go on.
            self._abandon(running, "lost the run lock" if isinstance(exc, LockLostError) else type(exc).__name__)
            if not isinstance(exc, (LockLostError, ReplicasInDoubtError)):
                self.lock.verify()  # a lost lock explains the rest (its successor stops what we left)
            raise
        if self.stop.reason is not None:
            self._interrupt(running)  # raises Interrupted
        result = book.finish(planned, started)
        self.durations.update(known_durations([status]))
        return result

    def _startable(self, ready: list[str], schedule: Schedule) -> list[str]:
        """The ready tasks that may start now; one that must wait for the close is recorded waiting instead."""
        starting = []
        for name in ready:
            why = self.start_wait(self.settings.task(name))
            if why is None:
                starting.append(name)
                continue
            self._book.wait(name, why)
            schedule.failed(name)  # what runs after it waits too: recorded by record_blocked
            self._book.record_blocked(schedule)
        return starting

    # --- attempts ----------------------------------------------------------------------

    def _probe(self, task: Running, session: dt.date) -> None:
        """Ask the task's wait_for probe whether its data is there (a command under the supervisor, bounded)."""
        self._book.say()  # what led to it is in the log before its probe runs (a probe waits at no gate)
        task.probing = True
        task.attempt_id = AttemptId(session, task.spec.name, PROBE)
        task.deadline = time.monotonic() + self._probe_limit(task.spec)
        self.processes.start(task.attempt_id, command_request(task.spec, session, self.lock.run_id,
                                                               task.spec.wait_for), gated=False)

    @staticmethod
    def _probe_limit(spec: TaskSpec) -> float:
        """A probe is stopped after PROBE_TIMEOUT, or the task's own timeout when that is shorter."""
        return min(PROBE_TIMEOUT, spec.timeout or PROBE_TIMEOUT)

    def _probed(self, task: Running, event: Ended, schedule: Schedule, running: dict[str, Running],
                session: dt.date) -> None:
        """The probe ended: start the task, or leave it waiting for data, or fail it when its wait is over."""
        book, name, spec = self._book, task.spec.name, task.spec
        task.probing, task.attempt_id, task.deadline = False, None, None
        until = self._probes.pop(name)
        outcome = command_outcome(spec, event, program=spec.wait_for[0])
        if outcome.success:
            book.log.bind(task=name).info("data_ready")
            book.record(name, IN_PROGRESS)
            self._launch(task, session)  # it runs once the next step's write has it in progress
            return
        del running[name]
        now = self.clock()
        since = parse_time(book.status.details.setdefault(name, TaskRecord()).waiting_since) or now
        broken = isinstance(event.result, dict) and "exec_error" in event.result  # no data will change that
        if broken or now >= until:
            why = f"its wait_for probe cannot run ({outcome.error})" if broken else \
                f"still waiting for data after {span_text((now - since).total_seconds())} ({outcome.error}); " \
                f"its wait ended at {self._local(until)}"
            book.finish_task(name, Outcome(False, why, outcome.output), 0, time.monotonic() - task.started)
            schedule.failed(name)
            return
        book.log.bind(task=name, probe=scrub(outcome.error or ""), until=iso(until)).info("data_not_ready")
        book.wait(name, f"waits for data ({scrub(outcome.error or 'not yet')}) until {self._local(until)}",
                  iso(since))
        schedule.failed(name)  # what runs after it waits too: recorded by record_blocked

    def _local(self, moment: dt.datetime) -> str:
        local = moment.astimezone(self.tz)
        return f"{local:%Y-%m-%d %H:%M} {getattr(self.tz, 'key', local.tzname())}"

    def _launch(self, task: Running, session: dt.date) -> None:
        """Ask for the task's next attempt; its own code runs once the step's write is in (run/gate.py)."""
        spec = task.spec
        task.attempt += 1
        task.attempt_id = AttemptId(session, spec.name, task.attempt)
        task.retry_at = None
        task.stopping = False
        task.deadline = time.monotonic() + spec.timeout if spec.timeout else None
        task.record = self._book.attempt_started(spec.name, task.attempt)
        make = command_request if spec.command else python_request
        self.processes.start(task.attempt_id, make(spec, session, self.lock.run_id))

    def _step(self, running: dict[str, Running], schedule: Schedule, session: dt.date) -> bool:
        """Wait for what comes first (an attempt ended, a timeout, a retry due, POLL_SECONDS) and act on it.

        True when it recorded something that Redis does not have yet: an attempt ended (the
        task's transition, or the attempt alone when the task retries), a retry began.
        """
        book, changed = self._book, False
        now = time.monotonic()
        timers = [t for task in running.values() for t in (task.deadline, task.retry_at) if t is not None]
        wait = max(0.0, min([POLL_SECONDS, *(t - now for t in timers)]))
        book.say()  # nothing is held while the runner waits
        for event in self.processes.events(wait):
            name = event.attempt.task
            task = running.get(name)
            if task is None or task.attempt_id != event.attempt:
                continue
            if task.probing:
                self._probed(task, event, schedule, running, session)
                changed = True
                continue
            outcome = _outcome(task.spec, event)
            book.attempt_ended(task.record, COMPLETED if outcome.success else FAILED, outcome.error)
            task.attempt_id = None
            changed = True
            if outcome.success or task.attempt > task.spec.retries or self.stop.reason or self.lock.lost.is_set():
                del running[name]
                book.finish_task(name, outcome, task.attempt, time.monotonic() - task.started)
                (schedule.completed if outcome.success else schedule.failed)(name)
                continue
            delay = task.spec.retry_delay * 2 ** (task.attempt - 1)
            task.retry_at = time.monotonic() + delay
            book.retrying(name, task.attempt, outcome.error, delay)
        now = time.monotonic()
        for task in running.values():
            if task.attempt_id and task.deadline is not None and now >= task.deadline and not task.stopping:
                task.stopping = True
                limit = self._probe_limit(task.spec) if task.probing else task.spec.timeout
                self.processes.stop(task.attempt_id, f"{'its probe ' if task.probing else ''}timed out after "
                                                     f"{limit:g}s")
            elif task.attempt_id is None and task.retry_at is not None and now >= task.retry_at:
                self._launch(task, session)
                changed = True
        return changed

    # --- stopping ----------------------------------------------------------------------

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

    def _abandon(self, running: dict[str, Running], why: str) -> None:
        """Stop every task of the cycle and wait until no process of it is left; nothing is recorded."""
        self.processes.stop_all(f"its runner stopped: {why}")
        ended = self._wait_ended(running)
        self._unstopped([n for n, t in running.items() if t.attempt_id and n not in ended])

    def _unstopped(self, names: list[str]) -> None:
        """Tasks whose processes outlived every signal: the lock stays theirs until its lease runs out."""
        if names:
            self._book.log.bind(tasks=names, console=False).error("task_processes_not_stopped")
            self.lock.keep()

    def _interrupt(self, running: dict[str, Running]) -> None:
        """Stop the running tasks, wait until they are gone, record them as interrupted, and stop."""
        book, why = self._book, f"interrupted by {self.stop.reason}"
        self.processes.stop_all(why)
        ended = self._wait_ended(running)
        for name, task in running.items():
            event = ended.get(name)
            if task.probing and (event is not None or not task.attempt_id):
                book.status.tasks[name] = PENDING  # it was only being probed: it never started
                continue
            outcome = _outcome(task.spec, event) if event is not None else None
            if outcome is not None and outcome.success:  # it completed before the signal reached it
                book.attempt_ended(task.record, COMPLETED, None)
                book.finish_task(name, outcome, task.attempt, time.monotonic() - task.started)
                continue
            error = why if event is not None or not task.attempt_id else \
                f"{why}; its processes did not end within {self._stop_wait:g}s"
            book.task_interrupted(name, error, task.attempt, task.record if task.attempt_id else None)
        self._unstopped([n for n, t in running.items() if t.attempt_id and n not in ended])
        book.interrupted(self.stop.reason, why)
        raise Interrupted(self.stop.reason, self.stop.exit_code)


def _outcome(spec: TaskSpec, ended: Ended) -> Outcome:
    return command_outcome(spec, ended) if spec.command else python_outcome(ended)
