"""One cycle's record: its session's status document as the cycle changes it, each transition logged and told to the screen."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tradeul_maint.base import safejson
from tradeul_maint.base.redact import scrub, scrub_value
from tradeul_maint.config.settings import Settings
from tradeul_maint.plan.explain import caught_up
from tradeul_maint.plan.planner import PlannedSession, waits_after
from tradeul_maint.plan.schedule import Schedule
from tradeul_maint.plan.trends import median_durations, slow_tasks
from tradeul_maint.run.events import (HELD, INTERRUPTED, CycleFinished, CycleStarted, Listener, TaskEnded,
                                      TaskRetrying, TaskStarted, ignore)
from tradeul_maint.run.processes import stop_leftovers
from tradeul_maint.run.result import CycleResult
from tradeul_maint.run.tasks import Outcome
from tradeul_maint.state.document import (COMPLETED, FAILED, IN_PROGRESS, INTERRUPTED_ATTEMPT, PENDING, RUNNER_STOPPED,
                                          SKIPPED, WAITING_FOR_DATA, AttemptRecord, CycleRecord, SessionStatus,
                                          TaskRecord, cap_error, iso)
from tradeul_maint.state.lock import RunLock
from tradeul_maint.state.store import StateStore
from tradeul_maint.state.tasklist import task_list


STATUS_OUTPUT_LIMIT = 4096  # characters of a failed command's output kept in the status document
LOG_OUTPUT_LIMIT = 16384


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


def _tail(text: str | None, limit: int) -> str | None:
    if not text:
        return None
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    newline = cut.find("\n")
    return "..." + (cut[newline + 1:] if 0 <= newline < len(cut) - 1 else cut)  # whole lines only


class HeldLog:
    """A cycle's log whose lines wait, in order, until `say`: loguru's bound logger, held.

    A line costs about 0.15 ms to make and write (scrubbed, encoded, appended under a lock),
    and each task has two; the Recorder says them while its step's write is on its way to
    Redis, in time the runner would otherwise spend waiting for the reply.
    """

    def __init__(self, log: Any, lines: list | None = None):
        self._log = log
        self.lines = [] if lines is None else lines  # (bound logger, level, event), shared by every bind

    def bind(self, **fields: Any) -> HeldLog:
        return HeldLog(self._log.bind(**fields), self.lines)

    def log(self, level: str, event: str) -> None:
        self.lines.append((self._log, level, event))

    def info(self, event: str) -> None:
        self.log("INFO", event)

    def warning(self, event: str) -> None:
        self.log("WARNING", event)

    def error(self, event: str) -> None:
        self.log("ERROR", event)

    def say(self) -> None:
        """Write the held lines, oldest first."""
        lines, self.lines[:] = self.lines[:], []
        for log, level, event in lines:
            log.log(level, event)


@dataclass
class Recorder:
    """One cycle's writer of its session's status document, and the one place its transitions are told.

    Each transition goes into the document (`status`), the log (an event with bound fields)
    and the listener (a typed event, run/events.py); the document is written whole at each
    scheduling step (`write`, fenced on the run lock) and at the end (`finish`, with the
    `executed` flag). The runner decides what happens; this records it. Some 250 lines, past
    the usual 200: one method per transition, each writing the same three places, which is
    the point of having them together.

    Log lines are held (HeldLog) and said while the step's write travels, or before a probe
    starts or the runner waits (`say`): in their order, before the gate opens for any task they
    lead to (run/gate.py), a fraction of a millisecond after their event.
    """

    settings: Settings
    store: StateStore
    lock: RunLock
    clock: Callable[[], dt.datetime]
    trigger: Trigger
    history: dict[dt.date, SessionStatus | None]  # the lookback's documents: "slower than usual" compares with them
    log: Any  # loguru's logger bound to the session and the run
    listener: Listener = ignore  # a screen that shows the cycle as it goes (cli/live.py)
    status: SessionStatus | None = None
    cycle: CycleRecord | None = None  # this cycle's record, in the document
    waits: dict[str, str] = field(default_factory=dict)  # this cycle's tasks held back (for the close, or data)
    since: dict[str, str] = field(default_factory=dict)  # ...for data: since when (iso)
    blocked: bool = False  # the step recorded blocked or held-back tasks, not yet written
    attempted: bool = False  # an attempt (not a probe) started in this cycle

    def begin(self, planned: PlannedSession, existing: SessionStatus | None, known: dict[str, float]) -> SessionStatus:
        log = self.log
        if existing is not None and existing.corrupt:
            log.bind(error=existing.corrupt).warning("status_document_unreadable")
            existing = None
        status = self.status = existing or SessionStatus(planned.session)
        left = [name for name, state in status.tasks.items() if state == IN_PROGRESS]
        if left:
            self._stop_leftovers(left)
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
        self.waits = dict(planned.waiting)
        self.since, self.attempted = {}, False
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
        self._begin_cycle()
        self.write()
        expected = self._usual_seconds(planned.tasks, known)
        log.bind(tasks=list(planned.tasks), attempt=status.attempts, reason=planned.reason, expected_seconds=expected) \
            .info("starting_maintenance_cycle")
        self.listener(CycleStarted(planned.session, status.attempts, planned.reason, tuple(planned.tasks), expected))
        return status

    def _begin_cycle(self) -> None:
        """Close the previous cycle if its runner died in it, and open this one's record: who, from where, why."""
        previous = self.status.cycle
        if previous is not None and previous.finished_at is None:
            previous.outcome = previous.outcome or RUNNER_STOPPED
            for attempt in previous.attempts:
                if attempt.outcome is None:
                    attempt.outcome = INTERRUPTED_ATTEMPT
        t = self.trigger
        self.cycle = CycleRecord(iso(self.clock()), trigger=t.command, force=t.force, only=list(t.only),
                                 user=who(), host=socket.gethostname(), run_id=self.lock.run_id)
        self.status.begin_cycle(self.cycle)

    def _usual_seconds(self, tasks, known: dict[str, float]) -> dict[str, float]:
        """What each task usually takes, for the live view's time left: its median over the lookback, else its
        last known duration (the same figures as `status --task` and the window at risk)."""
        return {**{n: known[n] for n in tasks if n in known}, **median_durations(self.history, tasks)}

    def _stop_leftovers(self, tasks: list[str]) -> None:
        """Tasks left in progress by a run that died: on this host, make sure none of its processes still runs.

        Its supervisor stopped them unless it was killed too; then its processes are found by
        the run id in their environment. On another host nothing can be checked from here.
        """
        status = self.status
        host = (status.runner or "").rpartition(":")[0]
        if not status.run_id or status.run_id == self.lock.run_id or host != socket.gethostname():
            return
        pids = stop_leftovers(status.run_id, self.settings.run.stop_grace_seconds)
        if pids:
            self.log.bind(previous_run_id=status.run_id, pids=pids, tasks=tasks).warning("leftover_processes_stopped")

    # --- transitions ------------------------------------------------------------------

    def record(self, name: str, state: str, error: str | None = None) -> None:
        self.status.tasks[name] = state
        record = self.status.details.setdefault(name, TaskRecord())
        if state == IN_PROGRESS:
            record.started_at = iso(self.clock())
            self.log.bind(task=name, attempt=record.attempts + 1).info("task_starting")
            self.listener(TaskStarted(name, 1))
        elif state == SKIPPED:
            record.error = error
            self.log.bind(task=name, reason=error, console=False).error("task_skipped")
            self.listener(TaskEnded(name, SKIPPED, note=error or ""))

    def record_blocked(self, schedule: Schedule) -> None:
        for name, blocker in schedule.take_blocked():
            self.blocked = True
            if blocker in self.waits:
                self.wait(name, waits_after(self.waits[blocker], blocker), self.since.get(blocker))
            else:
                self.record(name, SKIPPED, error=f"dependency {blocker} did not complete")

    def wait(self, name: str, why: str, since: str | None = None) -> None:
        """Leave `name` pending with why: the session is not done until a run after the close (or, waiting for data
        `since` then, a run whose probe finds it) starts it."""
        self.status.tasks[name] = PENDING
        record = self.status.details.setdefault(name, TaskRecord())
        record.reason, record.waiting_since = why, since
        self.waits[name] = why
        if since is not None:
            self.since[name] = since
        self.log.bind(task=name, reason=why).info("task_waiting")
        self.listener(TaskEnded(name, HELD, note=why))
        self.blocked = True

    def attempt_started(self, name: str, attempt: int) -> AttemptRecord:
        """A new attempt in the cycle's record (written with the document's next whole write)."""
        self.attempted = True
        record = AttemptRecord(name, attempt, iso(self.clock()))
        self.cycle.add_attempt(record)
        if attempt > 1:
            self.log.bind(task=name, attempt=attempt).info("task_starting")
            self.listener(TaskStarted(name, attempt))
        return record

    def attempt_ended(self, record: AttemptRecord | None, outcome: str, error: str | None) -> None:
        """The attempt's end in the cycle's record (written with the document's next whole write)."""
        if record is not None:
            record.finished_at, record.outcome = iso(self.clock()), outcome
            record.error = cap_error(scrub(error)) if error and outcome != COMPLETED else None

    def retrying(self, name: str, attempt: int, error: str | None, delay: float) -> None:
        self.log.bind(task=name, attempt=attempt, error=scrub(error or ""), retry_in_seconds=delay) \
            .warning("task_retry")
        self.listener(TaskRetrying(name, attempt, delay, scrub(error or "")))

    def finish_task(self, name: str, outcome: Outcome, attempts: int, seconds: float) -> None:
        record = self.status.details.setdefault(name, TaskRecord())
        record.finished_at = iso(self.clock())
        record.duration_seconds = round(seconds, 3)
        record.attempts += attempts
        # What a task reports is stored and read back: scrubbed, and nothing the safe JSON reader would refuse.
        record.result = scrub_value(safejson.sanitized(outcome.result)) if outcome.result is not None else None
        self.status.tasks[name] = COMPLETED if outcome.success else FAILED
        task_log = self.log.bind(task=name, duration_seconds=record.duration_seconds, attempts=record.attempts)
        if outcome.success:
            record.error = record.output = record.traceback = None
            task_log.bind(result=record.result, output=_tail(outcome.output, LOG_OUTPUT_LIMIT)) \
                .info("task_completed")
            self.listener(TaskEnded(name, COMPLETED, record.attempts))
        else:
            # The status document is read by `status` and other tools: no password goes there either.
            record.error = scrub(outcome.error or "failed")
            record.output = _tail(scrub(outcome.output or ""), STATUS_OUTPUT_LIMIT)  # whole secrets, then the cut
            record.traceback = scrub(outcome.traceback) if outcome.traceback else None
            task_log.bind(error=outcome.error, output=_tail(outcome.output, LOG_OUTPUT_LIMIT),
                          traceback=outcome.traceback, console=False).error("task_failed")
            self.listener(TaskEnded(name, FAILED, record.attempts, record.error))

    def task_interrupted(self, name: str, error: str, attempts: int, attempt: AttemptRecord | None) -> None:
        """A task stopped by the run's stop: failed, with why, its attempt ended as interrupted."""
        self.status.tasks[name] = FAILED
        record = self.status.details.setdefault(name, TaskRecord())
        record.error = error
        self.attempt_ended(attempt, INTERRUPTED_ATTEMPT, error)
        record.attempts += attempts
        record.finished_at = iso(self.clock())
        self.log.bind(task=name, console=False).error("task_interrupted")
        self.listener(TaskEnded(name, INTERRUPTED, record.attempts, error))

    def __post_init__(self) -> None:
        self.log = self.log if isinstance(self.log, HeldLog) else HeldLog(self.log)

    def say(self) -> None:
        """The held log lines, written now."""
        self.log.say()

    def write(self) -> None:
        self.store.write(self.lock.token, self.status, meanwhile=self.say)
        self.blocked = False

    # --- the end ----------------------------------------------------------------------

    def interrupted(self, reason: str, why: str) -> None:
        """The cycle stopped by a signal or the deadline: its record says so, written whole."""
        self.status.interrupted = reason
        self.cycle.finished_at, self.cycle.outcome = iso(self.clock()), why
        self.write()
        self.log.bind(signal=reason).warning("maintenance_cycle_interrupted")
        self.say()

    def finish(self, planned: PlannedSession, started: float) -> CycleResult:
        """The cycle's end (it started at monotonic `started`), committed with the `executed` flag and `last_run` in
        one script, and its result."""
        status = self.status
        status.completed_at = self.clock()
        status.duration_seconds = round(time.monotonic() - started, 3)
        # Done: every task completed, or skipped for the catch-up policy (a reason, never a failure's error).
        status.all_success = all(status.completed(t.name) or caught_up(status, t.name) for t in self.settings.tasks)
        self.cycle.finished_at, self.cycle.done = iso(status.completed_at), status.all_success
        ran = planned.tasks + tuple(planned.blocked)  # a task held back for the close failed nothing
        self.cycle.outcome = FAILED if any(status.tasks.get(n) in (FAILED, SKIPPED) for n in ran) else COMPLETED
        waited_only = not self.attempted and self.cycle.outcome == COMPLETED and bool(self.since)
        if waited_only:
            self._only_waited()
        self.store.finish(self.lock.token, status)
        self._warn_slow(planned.tasks)
        self.log.bind(all_success=status.all_success, duration_seconds=status.duration_seconds,
                      completed=sum(s == COMPLETED for s in status.tasks.values()), total=len(status.tasks),
                      console=False) \
            .log("INFO" if status.all_success or waited_only else "ERROR",
                 "maintenance_cycle_waiting" if waited_only else "maintenance_cycle_finished")
        self.listener(CycleFinished(sum(s == COMPLETED for s in status.tasks.values()), len(status.tasks),
                                    status.duration_seconds))
        self.say()
        return CycleResult(planned.session, status, ran, time.monotonic() - started, waited_only)

    def _only_waited(self) -> None:
        """A cycle that found only data missing is no attempt: the count stays, and its record takes the place of
        the previous such cycle's (a watcher probing every few minutes for hours keeps one)."""
        status = self.status
        status.attempts -= 1
        self.cycle.outcome = WAITING_FOR_DATA
        earlier = status.cycles[:-1]
        if earlier and earlier[-1].outcome == WAITING_FOR_DATA:
            status.cycles = [*earlier[:-1], self.cycle]

    def _warn_slow(self, ran: tuple[str, ...]) -> None:
        """A task that took more than `slow_factor` times its median over the lookback is worth a warning."""
        status = self.status
        statuses = {**self.history, status.session: status}
        for trend in slow_tasks([n for n in ran if status.tasks.get(n) == COMPLETED], statuses, self.settings.run):
            self.log.bind(task=trend.task, duration_seconds=trend.latest.completed_in,
                          median_seconds=trend.median_seconds, ratio=trend.ratio, slow_factor=trend.slow_factor,
                          sessions=len(trend.durations), console=False) \
                .warning("task_slower_than_usual")
