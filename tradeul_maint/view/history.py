"""A session's history: its cycles and their attempts as an operator reads them, its timeline, and lateness.

Pure, like the status view it feeds: it takes one SessionStatus (what the store read) and
the time. A document keeps its session's last MAX_CYCLES cycles, each with what started it
(trigger, user, host) and its attempts (state/document.py). Two kinds of document say less:

- one written by an older version, or by the service this replaces, has no cycles: its
  task records make one cycle of one attempt per task that started;
- while a cycle runs, a task's transition reaches Redis before the cycle's record does
  (the record goes with the document's next whole write): a task of the cycle with no
  attempt yet gets one from its task record.

A session's deadline is its window's start plus `[schedule] deadline_minutes` (default
twice `window_minutes`); a session is late by how long after it it became done, that is
the end of the first cycle that left it done (its `completed_at` for a document without
cycles), so that a `run --force` weeks later does not make it late.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tradeul_maint.state.document import (COMPLETED, FAILED, IN_PROGRESS, INTERRUPTED_ATTEMPT, RUNNER_STOPPED, SKIPPED,
                                          AttemptRecord, CycleRecord, SessionStatus, iso, parse_time)

RUNNING_OUTCOME = "running"  # an attempt or cycle whose run holds the lock now


@dataclass(frozen=True)
class AttemptView:
    task: str
    attempt: int  # within its cycle, 1 first
    started_at: dt.datetime
    finished_at: dt.datetime | None  # None: still running (drawn up to now) or cut short with its runner
    outcome: str  # completed | failed | interrupted | running
    error: str | None

    def to_json(self) -> dict:
        return {"task": self.task, "attempt": self.attempt, "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "outcome": self.outcome, "error": self.error}


@dataclass(frozen=True)
class CycleView:
    number: int  # 1 is the oldest the document keeps
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    outcome: str  # completed | failed (the tasks it ran) | interrupted by SIG... | running | interrupted: ...
    done: bool  # the session was done at its end
    command: str  # what started it: cron, run --date [--force] [--task a,b], recover [--force]; unknown
    user: str | None
    host: str | None
    run_id: str | None
    attempts: tuple[AttemptView, ...]

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, round((self.finished_at - self.started_at).total_seconds(), 3))

    def to_json(self) -> dict:
        return {"cycle": self.number, "started_at": iso(self.started_at), "finished_at": iso(self.finished_at),
                "seconds": self.seconds, "outcome": self.outcome, "session_done": self.done,
                "trigger": self.command, "user": self.user, "host": self.host, "run_id": self.run_id,
                "attempts": [a.to_json() for a in self.attempts]}


def cycles(status: SessionStatus | None, running: bool) -> tuple[CycleView, ...]:
    """The session's cycles, oldest first; `running`: its unfinished cycle is alive (its run holds the lock)."""
    if status is None or status.corrupt:
        return ()
    records = status.cycles or _legacy_cycle(status)
    views = []
    for number, record in enumerate(records, start=1):
        last = number == len(records)
        open_outcome = RUNNING_OUTCOME if running and last else INTERRUPTED_ATTEMPT
        attempts = [_attempt(a.task, a.attempt, a.started_at, a.finished_at, a.outcome or open_outcome, a.error)
                    for a in record.attempts]
        if last and record.finished_at is None:
            attempts += _unrecorded_attempts(status, record, attempts, open_outcome)
        outcome = record.outcome or (RUNNING_OUTCOME if running and last else RUNNER_STOPPED)
        views.append(CycleView(number, parse_time(record.started_at), parse_time(record.finished_at), outcome,
                               record.done, record.command, record.user, record.host, record.run_id,
                               tuple(a for a in attempts if a is not None)))
    return tuple(views)


def _attempt(task: str, number: int, started: str | None, finished: str | None, outcome: str,
             error: str | None) -> AttemptView | None:
    start = parse_time(started)
    return None if start is None else AttemptView(task, number, start, parse_time(finished), outcome, error)


def _legacy_cycle(status: SessionStatus) -> list[CycleRecord]:
    """A document without cycles as one cycle: what its task records say (nothing when no task started)."""
    if status.started_at is None:
        return []
    attempts = []
    for name, state in status.tasks.items():
        record = status.details.get(name)
        if record is not None and record.started_at and state != SKIPPED:
            outcome = None if state == IN_PROGRESS else state
            attempts.append(AttemptRecord(name, 1, record.started_at, record.finished_at, outcome, record.error))
    finished = iso(status.completed_at)
    outcome = None if finished is None else COMPLETED if status.all_success else FAILED
    return [CycleRecord(iso(status.started_at), finished, outcome, status.done, run_id=status.run_id,
                        attempts=attempts)]


def _unrecorded_attempts(status: SessionStatus, cycle: CycleRecord, recorded: list, open_outcome: str
                         ) -> list[AttemptView | None]:
    """Tasks of the unfinished cycle that started (their records say so) with no attempt in its record yet."""
    start = parse_time(cycle.started_at)
    have = {a.task for a in recorded if a is not None}
    extra = []
    for name, state in status.tasks.items():
        record = status.details.get(name)
        began = parse_time(record.started_at) if record else None
        if name in have or began is None or start is None or began < start or state == SKIPPED:
            continue
        outcome = open_outcome if state == IN_PROGRESS else state
        extra.append(_attempt(name, 1, record.started_at, None if state == IN_PROGRESS else record.finished_at,
                              outcome, record.error if state == FAILED else None))
    return extra


# --- lateness ----------------------------------------------------------------------------


def done_at(status: SessionStatus | None) -> dt.datetime | None:
    """When the session became done: the end of its first cycle that left it done; None when it is not done."""
    if status is None or not status.done:
        return None
    first = next((c for c in status.cycles if c.done and c.finished_at), None)
    return parse_time(first.finished_at) if first else status.completed_at


def late_seconds(done: dt.datetime | None, deadline: dt.datetime) -> float | None:
    """How long after its deadline the session became done: 0 when on time, None when it is not done."""
    if done is None:
        return None
    return max(0.0, round((done - deadline).total_seconds(), 3))


# --- the timeline ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One attempt on a session's timeline, in seconds from the timeline's start."""

    task: str
    status: str  # the attempt's outcome: completed | failed | interrupted | running
    start: float
    end: float
    open: bool  # still running: it ends at `now`
    cycle: int = 1
    attempt: int = 1

    def to_json(self) -> dict:
        return {"start_seconds": self.start, "end_seconds": self.end, "open": self.open}


@dataclass(frozen=True)
class Timeline:
    """Every attempt of a session's cycles on one time axis, from the first start to the last end."""

    start: dt.datetime
    end: dt.datetime
    bars: tuple[Bar, ...]  # by cycle, then in the order the attempts started

    @property
    def seconds(self) -> float:
        return round((self.end - self.start).total_seconds(), 3)

    def to_json(self) -> dict:
        return {"start": iso(self.start), "end": iso(self.end), "seconds": self.seconds}

    def latest(self, task: str) -> Bar | None:
        """The task's latest attempt: its `bar` in `status --date D --json`."""
        return next((b for b in reversed(self.bars) if b.task == task), None)


def timeline(views: tuple[CycleView, ...], now: dt.datetime) -> Timeline | None:
    """The attempts from their start to their end; one still running ends at `now`. None if none started."""
    spans = []
    for cycle in views:
        for a in cycle.attempts:
            running = a.outcome == RUNNING_OUTCOME
            end = now if running else a.finished_at or a.started_at
            spans.append((cycle.number, a, max(end, a.started_at), running))
    if not spans:
        return None
    start, end = min(s[1].started_at for s in spans), max(s[2] for s in spans)
    return Timeline(start, end, tuple(Bar(a.task, a.outcome, round((a.started_at - start).total_seconds(), 3),
                                          round((b - start).total_seconds(), 3), running, number, a.attempt)
                                      for number, a, b, running in spans))
