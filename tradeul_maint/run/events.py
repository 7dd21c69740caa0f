"""What a run tells a screen as it happens: one typed event per step of a cycle, to a `Listener`.

The runner (and the core, between cycles) calls its listener with these; the live view
(cli/live.py) is one, a run nobody watches has `ignore`. The log says the same things to
the file, for people and `logs`, in its own words: the screen never reads log entries,
so renaming an event in the log cannot blank a column on the screen. A listener is called
from the runner's thread, between two steps of the cycle: it must be quick and never raise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, Union


@dataclass(frozen=True)
class RecoveryStarting:
    """A session the cron plan found missed is about to get its cycle."""

    session: dt.date


@dataclass(frozen=True)
class CycleStarted:
    session: dt.date
    attempt: int | None  # the session's cycle number (its status document's `attempts`)
    reason: str  # the plan's
    tasks: tuple[str, ...]  # the tasks this cycle may run, in the order they appear
    expected_seconds: Mapping[str, float] = field(default_factory=dict)  # what each usually takes, where known


@dataclass(frozen=True)
class TaskStarted:
    task: str
    attempt: int  # 1 for the task's first attempt in this cycle


@dataclass(frozen=True)
class TaskRetrying:
    task: str
    attempt: int  # the attempt that failed
    retry_in_seconds: float
    error: str


INTERRUPTED, HELD = "interrupted", "held"  # with the document's COMPLETED, FAILED and SKIPPED


@dataclass(frozen=True)
class TaskEnded:
    """The task is done for this cycle: `state` is the document's COMPLETED, FAILED or SKIPPED (state/document.py),
    or INTERRUPTED, or HELD for the close (`market_closed_only`: the exchange opened while the cycle ran)."""

    task: str
    state: str
    attempts: int | None = None  # how many the task took, when it ran
    note: str = ""  # why: the error, the skip's or the hold's reason


@dataclass(frozen=True)
class CycleFinished:
    completed: int
    total: int
    seconds: float


Event = Union[RecoveryStarting, CycleStarted, TaskStarted, TaskRetrying, TaskEnded, CycleFinished]


class Listener(Protocol):
    def __call__(self, event: Event) -> None: ...


def ignore(event: Event) -> None:
    """The listener of a run nobody watches."""
