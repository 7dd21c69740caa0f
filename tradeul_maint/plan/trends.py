"""Durations across sessions: one task's trend, the tasks slower than usual, and the window at risk.

Pure, like the planner and the status view: it takes the status documents the store read
(session -> SessionStatus) and the settings, and returns plain values that `status`
renders as a table or a chart and prints as JSON. A task's "usual" duration is the median
of its completed runs over the sessions looked at: a median, so that one slow day does not
move it, and completed runs only, since a failed attempt stops anywhere.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tradeul_maint.config.settings import RunSettings, Settings, TaskSpec
from tradeul_maint.state.document import COMPLETED, SessionStatus, iso, parse_time

MIN_RUNS = 3  # completed runs needed before a task can be called slower than usual


@dataclass(frozen=True)
class TaskRun:
    """One task in one session, as its status document recorded it."""

    session: dt.date
    state: str | None  # pending | in_progress | completed | failed | skipped; None: not recorded
    attempts: int = 0
    started_at: dt.datetime | None = None
    duration_seconds: float | None = None

    @property
    def completed_in(self) -> float | None:
        """Its duration when it completed; the durations a trend is made of."""
        return self.duration_seconds if self.state == COMPLETED and self.duration_seconds is not None else None

    def to_json(self) -> dict:
        return {"date": self.session.isoformat(), "status": self.state, "attempts": self.attempts,
                "started_at": iso(self.started_at), "duration_seconds": self.duration_seconds}


@dataclass(frozen=True)
class Trend:
    """One task across sessions (oldest first): the median of its completed runs, and how the latest compares."""

    task: str
    runs: tuple[TaskRun, ...]
    slow_factor: float
    slow_min_seconds: float = 0.0  # a latest run shorter than this is never slow, whatever its ratio

    @property
    def durations(self) -> list[float]:
        return [d for r in self.runs if (d := r.completed_in) is not None]

    @property
    def median_seconds(self) -> float | None:
        durations = self.durations
        return round(statistics.median(durations), 3) if durations else None

    @property
    def latest(self) -> TaskRun | None:
        """The newest completed run."""
        return next((r for r in reversed(self.runs) if r.completed_in is not None), None)

    @property
    def ratio(self) -> float | None:
        """The latest completed run as a multiple of the median."""
        median, latest = self.median_seconds, self.latest
        if not median or latest is None:
            return None
        return round(latest.completed_in / median, 2)

    @property
    def slow(self) -> bool:
        """The latest run took more than `slow_factor` times the median (given MIN_RUNS completed runs), and at
        least `slow_min_seconds`: 0.3 s against 0.02 s is noise, not a task getting slower."""
        return (len(self.durations) >= MIN_RUNS and self.ratio is not None and self.ratio > self.slow_factor
                and self.latest.completed_in >= self.slow_min_seconds)

    def describe(self) -> str:
        """`load_ohlc took 3.2x its median (40.0s against 12.5s)`: the note on a slow task."""
        return (f"{self.task} took {self.ratio:g}x its median ({self.latest.completed_in:.1f}s against "
                f"{self.median_seconds:.1f}s)")

    def to_json(self) -> dict:
        latest = self.latest
        return {"task": self.task, "median_seconds": self.median_seconds,
                "latest": None if latest is None else latest.session.isoformat(),
                "latest_seconds": None if latest is None else latest.completed_in, "ratio": self.ratio,
                "slow": self.slow, "slow_factor": self.slow_factor, "slow_min_seconds": self.slow_min_seconds,
                "sessions": [r.to_json() for r in self.runs]}


def task_run(task: str, session: dt.date, status: SessionStatus | None) -> TaskRun:
    if status is None or status.corrupt or task not in status.tasks:
        return TaskRun(session, None)
    record = status.details.get(task)
    if record is None:
        return TaskRun(session, status.tasks[task])
    # TaskRecord.parse has checked every field's type: a mistyped document is `corrupt`, left out above.
    return TaskRun(session, status.tasks[task], record.attempts, parse_time(record.started_at),
                   record.duration_seconds)


def trend(task: str, statuses: Mapping[dt.date, SessionStatus | None], slow_factor: float,
          slow_min_seconds: float = 0.0) -> Trend:
    """`task` across the sessions of `statuses`, oldest first."""
    return Trend(task, tuple(task_run(task, s, statuses[s]) for s in sorted(statuses)), slow_factor,
                 slow_min_seconds)


def slow_tasks(names: Iterable[str], statuses: Mapping[dt.date, SessionStatus | None],
               run: RunSettings) -> list[Trend]:
    """The tasks whose latest completed run took more than `slow_factor` times their median (and at least
    `slow_min_seconds`)."""
    return [t for name in names if (t := trend(name, statuses, run.slow_factor, run.slow_min_seconds)).slow]


def task_names(statuses: Mapping[dt.date, SessionStatus | None]) -> list[str]:
    """Every task the documents mention, in the order first seen (newest sessions first)."""
    seen: dict[str, None] = {}
    for session in sorted(statuses, reverse=True):
        status = statuses[session]
        if status is not None and not status.corrupt:
            seen.update(dict.fromkeys(status.tasks))
    return list(seen)


def median_durations(statuses: Mapping[dt.date, SessionStatus | None], names: Iterable[str]) -> dict[str, float]:
    """Each task's median completed duration over `statuses`; tasks that never completed are left out."""
    medians = {}
    for name in names:
        median = trend(name, statuses, 0.0).median_seconds
        if median is not None:
            medians[name] = median
    return medians


# --- the window at risk ------------------------------------------------------------------


@dataclass(frozen=True)
class WindowRisk:
    """How long a whole cycle should take, from the tasks' median durations, against the deadline.

    The estimate is the longer of the critical path (the longest chain of `after`
    dependencies, each task at its median) and the total of the medians spread over
    `max_parallel` workers: a cycle cannot be shorter than either. A cycle started when the
    window opens should end within `deadline_seconds` ([schedule] deadline_minutes, by
    default twice window_minutes); when the estimate says otherwise the window is at risk.
    """

    expected_seconds: float
    deadline_seconds: float
    path: tuple[str, ...]  # the critical path, first task first
    serial: bool  # the estimate is the total over max_parallel workers, longer than the path
    unknown: tuple[str, ...]  # tasks that never completed in the sessions looked at: counted as 0

    @property
    def at_risk(self) -> bool:
        return self.expected_seconds > self.deadline_seconds

    def message(self) -> str:
        """One line for `status` and `check`."""
        how = ("every task in turn (max_parallel)" if self.serial else
               f"the critical path {' -> '.join(self.path)}")
        line = (f"a cycle takes about {_minutes(self.expected_seconds)} by the median durations ({how}), "
                f"{'more' if self.at_risk else 'less'} than the {_minutes(self.deadline_seconds)} after the "
                "window opens that it should end within")
        if self.unknown:
            line += f"; no duration known yet for {', '.join(self.unknown)}"
        return ("window at risk: " if self.at_risk else "") + line

    def to_json(self) -> dict:
        return {"at_risk": self.at_risk, "expected_seconds": self.expected_seconds,
                "deadline_seconds": self.deadline_seconds, "critical_path": list(self.path),
                "serial": self.serial, "unknown": list(self.unknown), "message": self.message()}


def window_risk(settings: Settings, statuses: Mapping[dt.date, SessionStatus | None]) -> WindowRisk | None:
    """The estimate of a whole cycle of `settings.tasks` from the medians in `statuses`; None without tasks.

    `statuses` are the sessions to take durations from, typically the lookback's
    (`StateStore.statuses(horizon.sessions_in_view(...))`); `check` calls this too.
    """
    if not settings.tasks:
        return None
    medians = median_durations(statuses, settings.task_names)
    path, length = critical_path(settings.tasks, medians)
    parallel = max(1, settings.run.max_parallel)
    spread = sum(medians.values()) / parallel
    serial = spread > length
    deadline = settings.schedule.deadline.total_seconds()
    return WindowRisk(round(max(length, spread), 3), deadline, path, serial,
                      tuple(n for n in settings.task_names if n not in medians))


def critical_path(tasks: Iterable[TaskSpec], durations: Mapping[str, float]) -> tuple[tuple[str, ...], float]:
    """The longest chain of dependencies by `durations` (0 for a task without one), and its length."""
    specs = {t.name: t for t in tasks}
    waiting = {name: sum(dep in specs for dep in spec.after) for name, spec in specs.items()}
    dependents: dict[str, list[str]] = {name: [] for name in specs}
    for name, spec in specs.items():
        for dep in spec.after:
            if dep in specs:
                dependents[dep].append(name)
    ready = [name for name, count in waiting.items() if count == 0]
    best: dict[str, tuple[float, str | None]] = {}  # name -> (longest path ending with it, the task before)
    while ready:  # in dependency order, without recursion: a chain may be thousands of tasks long
        name = ready.pop()
        before = max(((best[dep][0], dep) for dep in specs[name].after if dep in best), default=(0.0, None))
        best[name] = (before[0] + durations.get(name, 0.0), before[1])
        for child in dependents[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if not best:
        return (), 0.0
    position = {name: i for i, name in enumerate(specs)}
    end = max(best, key=lambda n: (best[n][0], -position[n]))  # a tie: the path ending first in the config
    path, node = [], end
    while node is not None:
        path.append(node)
        node = best[node][1]
    return tuple(reversed(path)), round(best[end][0], 3)


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f} min"
