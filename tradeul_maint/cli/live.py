"""The live view of `run` and `recover` on a terminal: each task's state, attempt, elapsed time and time left.

It is the run's listener (run/events.py): the runner tells it each step of the cycle as a
typed event, and rich's Live draws it on stderr a few times a second. It reads nothing
else while the cycle runs: the dependencies come from the settings, the expected durations
from the cycle's `CycleStarted.expected_seconds` (each task's median over the lookback, else
its last known duration). Off a terminal
(cron, pipes, CI) the command never installs it, so the output stays the summary alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tradeul_maint.cli.render import TASK_STYLES, duration
from tradeul_maint.config.settings import TaskSpec
from tradeul_maint.plan.trends import critical_path
from tradeul_maint.run.events import (INTERRUPTED, CycleFinished, CycleStarted, Event, RecoveryStarting, TaskEnded,
                                      TaskRetrying, TaskStarted)
from tradeul_maint.state.document import COMPLETED

WAITING, RUNNING, RETRYING = "waiting", "running", "retrying"  # and the TaskEnded states; held: for the close


@dataclass
class TaskLine:
    """One task of the cycle on screen."""

    name: str
    state: str = WAITING
    attempt: int = 0
    started: float | None = None  # monotonic
    ended: float | None = None
    retry_at: float | None = None
    note: str = ""

    def elapsed(self, now: float) -> float | None:
        return None if self.started is None else (self.ended or now) - self.started


@dataclass
class Cycle:
    session: str
    attempt: int | None
    reason: str
    tasks: dict[str, TaskLine]
    started: float
    ended: float | None = None
    summary: str = ""


@dataclass
class LiveView:
    """The state of the run as the events tell it, and its drawing; a listener of the run (run/events.py)."""

    specs: Mapping[str, TaskSpec]
    parallel: int = 1
    cycles: list[Cycle] = field(default_factory=list)
    recovering: str | None = None  # the session RecoveryStarting announced
    clock: Callable[[], float] = time.monotonic
    on_first_event: Callable[[], object] | None = None  # starts the drawing: a run with nothing to do draws nothing
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _expected: dict[str, float] = field(default_factory=dict)  # task -> usual seconds, from the cycle

    # --- the events ------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.handle(event)
            begin = self.on_first_event if (self.cycles or self.recovering) else None
            if begin is not None:
                self.on_first_event = None
        if begin is not None:
            begin()  # outside the lock: the first refresh draws, and drawing takes the lock

    def handle(self, event: Event) -> None:
        now = self.clock()
        if isinstance(event, RecoveryStarting):
            self.recovering = event.session.isoformat()
            return
        if isinstance(event, CycleStarted):
            self._expected = dict(event.expected_seconds)
            self.cycles.append(Cycle(event.session.isoformat(), event.attempt, event.reason,
                                     {name: TaskLine(name) for name in event.tasks}, now))
            return
        cycle = self.cycles[-1] if self.cycles else None
        if cycle is None:
            return
        if isinstance(event, CycleFinished):
            cycle.ended = now
            cycle.summary = f"{event.completed}/{event.total} tasks completed in {duration(event.seconds)}"
            return
        line = cycle.tasks.get(event.task)
        if line is None:
            return
        if isinstance(event, TaskStarted):
            line.state, line.started, line.attempt = RUNNING, now, event.attempt
        elif isinstance(event, TaskRetrying):
            line.state, line.attempt = RETRYING, event.attempt + 1
            line.retry_at = now + event.retry_in_seconds
            line.note = _first_line(event.error)
        elif isinstance(event, TaskEnded):
            line.state, line.ended, line.note = event.state, now, _first_line(event.note)
            line.attempt = event.attempts or line.attempt

    # --- the drawing -----------------------------------------------------------------

    def __rich__(self) -> RenderableType:
        with self._lock:
            return self.render(self.clock())

    def render(self, now: float) -> RenderableType:
        parts: list[RenderableType] = []
        for cycle in self.cycles[:-1]:
            parts.append(Text(f"{cycle.session}: {cycle.summary}", style="dim"))
        if not self.cycles:
            return Text(f"preparing {self.recovering or 'the run'}...", style="dim")
        cycle = self.cycles[-1]
        attempt = f", attempt {cycle.attempt}" if cycle.attempt else ""
        head = Text(f"{cycle.session}", style="bold") + Text(f" ({cycle.reason}){attempt}: ")
        if cycle.ended is not None:
            head += Text(cycle.summary)
        else:
            left = self.time_left(cycle, now)
            head += Text(f"{duration(now - cycle.started)} elapsed" +
                         (f", about {duration(left)} left" if left is not None else ""))
        parts.append(head)
        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("task", "state", "attempt", "elapsed", "left", ""):
            table.add_column(column, no_wrap=column != "")
        for line in cycle.tasks.values():
            table.add_row(line.name, Text(line.state, style=TASK_STYLES.get(_style_key(line.state), "")),
                          str(line.attempt) if line.attempt else "-", duration(line.elapsed(now)),
                          self._left(line, now), Text(self.why(cycle, line, now), style="dim"))
        parts.append(table)
        return Group(*parts)

    def why(self, cycle: Cycle, line: TaskLine, now: float) -> str:
        """What a task is waiting for, or what went wrong."""
        if line.state == RETRYING:
            wait = f"next attempt in {duration(max(0.0, line.retry_at - now))}" if line.retry_at else "next attempt"
            return f"{wait}; {line.note}" if line.note else wait
        if line.state != WAITING:
            return line.note
        spec = self.specs.get(line.name)
        pending = [dep for dep in (spec.after if spec else ()) if dep in cycle.tasks
                   and cycle.tasks[dep].state != COMPLETED]
        if pending:
            return "waiting on " + ", ".join(f"{dep} ({cycle.tasks[dep].state})" for dep in pending)
        busy = sum(other.state in (RUNNING, RETRYING) for other in cycle.tasks.values())
        if busy >= self.parallel:
            return f"ready: waiting for a free worker (max_parallel = {self.parallel})"
        return "ready"

    def _left(self, line: TaskLine, now: float) -> str:
        usual = self._expected.get(line.name)
        if usual is None or line.state not in (WAITING, RUNNING, RETRYING):
            return ""
        if line.state == WAITING:
            return f"~{duration(usual)}"
        elapsed = line.elapsed(now) or 0.0
        return f"~{duration(usual - elapsed)}" if elapsed <= usual else f"{duration(elapsed - usual)} over usual"

    def time_left(self, cycle: Cycle, now: float) -> float | None:
        """The rest of the cycle by the usual durations: its critical path, or the work over the workers."""
        remaining: dict[str, float] = {}
        for line in cycle.tasks.values():
            usual = self._expected.get(line.name)
            if line.state not in (WAITING, RUNNING, RETRYING):
                continue
            if usual is None:
                return None
            remaining[line.name] = max(0.0, usual - (line.elapsed(now) or 0.0))
        specs = [self.specs[n] for n in remaining if n in self.specs]
        _, path = critical_path(specs, remaining)
        return max(path, sum(remaining.values()) / max(1, self.parallel))


def _first_line(text) -> str:
    return str(text).strip().splitlines()[0] if text and str(text).strip() else ""


def _style_key(state: str) -> str:
    return {RUNNING: "in_progress", RETRYING: "in_progress", INTERRUPTED: "failed"}.get(state, state)


@contextmanager
def showing(console: Console, specs: Mapping[str, TaskSpec], parallel: int) -> Iterator[LiveView]:
    """The live view on `console` while the body runs, which gives it to the run as its listener; it stays on screen
    at the end."""
    view = LiveView(specs, parallel)
    live = Live(console=console, get_renderable=view.__rich__, refresh_per_second=4, transient=False,
                redirect_stdout=True, redirect_stderr=True)
    view.on_first_event = lambda: live.start(refresh=True)
    try:
        yield view
    finally:
        live.stop()  # draws the final state, which stays on screen; nothing when it never started
