"""What status shows, as values: each session's state and tasks, the lookback's view, their JSON documents.

overview.py builds these from what the store read; render.py draws them; metrics.py counts them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from tradeul_maint.plan.calendar import Window
from tradeul_maint.plan.trends import Trend, WindowRisk
from tradeul_maint.state.document import iso
from tradeul_maint.state.lock import LockHolder
from tradeul_maint.state.tasklist import Difference
from tradeul_maint.view import history
from tradeul_maint.view.history import CycleView, Timeline
from tradeul_maint.view.sources import Sources


DONE, FAILED_STATE, RUNNING, INTERRUPTED, WAITING = "done", "failed", "running", "interrupted", "waiting"
CORRUPT, MISSING, DUE, NOT_YET_DUE, EXPIRED = "corrupt", "missing", "due", "not_yet_due", "expired"
ERROR_OUTPUT_LINES = 5  # last lines of a failed command's output shown with its error


@dataclass(frozen=True)
class TaskView:
    name: str
    status: str  # pending | in_progress | completed | failed | skipped
    attempts: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_seconds: float | None
    error: str | None  # the exception message or exit status, then the last lines of the output
    note: str | None  # why it was not run in that cycle (catchup = "latest")
    traceback: str | None = None  # a failed Python task's, scrubbed and capped by the runner

    @property
    def error_summary(self) -> str | None:
        """The error, then the traceback's last line when it says more: what the table shows."""
        last = next((line for line in reversed((self.traceback or "").splitlines()) if line.strip()), None)
        if last and last.strip() not in (self.error or ""):
            return "\n".join(filter(None, (self.error, last.strip())))
        return self.error


@dataclass(frozen=True)
class SessionView:
    session: dt.date
    state: str
    window: Window
    window_passed: bool
    tasks_completed: int
    tasks_total: int
    attempts: int
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    duration_seconds: float | None
    run_id: str | None
    note: str | None  # what an operator should know: failed tasks, retry gate, why unreadable
    tasks: tuple[TaskView, ...]
    override: str | None = None  # how a [calendar] override changed this day
    timeline: Timeline | None = None  # with the tasks (`status --date D`)
    deadline: dt.datetime | None = None  # the window's start + deadline_minutes
    done_at: dt.datetime | None = None  # when it became done (history.done_at)
    cycles: tuple[CycleView, ...] = ()  # with the tasks (`status --date D`), oldest first
    # Where this host's configured tasks differ from the task list its latest cycle recorded (state/tasklist.py).
    task_list: tuple[Difference, ...] = ()

    @property
    def overdue(self) -> bool:
        """Its window has passed and it is not done: what `status --check` alerts on."""
        return self.window_passed and self.state != DONE

    @property
    def late_seconds(self) -> float | None:
        """How long after its deadline it became done: 0 on time, None when it is not done."""
        return history.late_seconds(self.done_at, self.deadline) if self.deadline else None

    @property
    def late(self) -> bool:
        return bool(self.late_seconds)

    def late_line(self, tz: str) -> str | None:
        """`done 14h02m after its deadline (2026-11-25 18:00), at 2026-11-26 08:02`, in exchange time; None on time."""
        if not self.late:
            return None
        local = ZoneInfo(tz)
        deadline, done = self.deadline.astimezone(local), self.done_at.astimezone(local)
        when = f"{done:%H:%M}" if done.date() == deadline.date() else f"{done:%Y-%m-%d %H:%M}"
        return f"done {_span(self.late_seconds)} after its deadline ({deadline:%Y-%m-%d %H:%M}), at {when}"


@dataclass(frozen=True)
class StatusView:
    now: dt.datetime
    calendar: str
    timezone: str
    lookback: int
    sessions: tuple[SessionView, ...]  # newest first
    next_window: Window | None
    holder: LockHolder | None
    last_run: str | None
    calendar_warning: str | None = None  # the calendar ends soon: upgrade exchange-calendars
    sources: Sources | None = None
    slow: tuple[Trend, ...] = ()  # tasks slower than usual in the lookback
    risk: WindowRisk | None = None  # how long a cycle should take, against the deadline
    trend: Trend | None = None  # `status --task NAME`
    job: str = "maintenance"
    policy: str = ""  # the job's window and catch-up policy, in words (explain.explain_job)
    containment: str | None = None  # what keeps a run's task processes together on this host (run/containment.py)

    @property
    def overdue(self) -> tuple[SessionView, ...]:
        """The sessions `status --check` fails on: window passed and not done; of the expired ones (never to run:
        the job's catchup) only the newest, and only until a later session of the job is done."""
        found, later = [], False  # a later session is done, or already expired
        for s in self.sessions:  # newest first
            if s.overdue and not (s.state == EXPIRED and later):
                found.append(s)
            later = later or s.state in (DONE, EXPIRED)
        return tuple(found)

    @property
    def lock_problem(self) -> str | None:
        """A lock no run of this tool would leave: it blocks every run until someone removes it."""
        if self.holder is None or not self.holder.foreign:
            return None
        return f"the run lock holds {self.holder.foreign}; no run can start until it is deleted"

    @property
    def ok(self) -> bool:
        return not self.overdue and not self.calendar_warning and not self.lock_problem

    @property
    def newest_done(self) -> SessionView | None:
        return next((s for s in self.sessions if s.state == DONE), None)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What `status --check` says under its line without failing: the newest done session was late, the window
        is at risk."""
        found = []
        newest = self.newest_done
        if newest is not None and newest.late:
            found.append(f"{newest.session} was {newest.late_line(self.timezone)}")
        if self.risk is not None and self.risk.at_risk:
            found.append(self.risk.message())
        return tuple(found)

    def check_line(self) -> str:
        passed = [s for s in self.sessions if s.window_passed]
        warning = "".join(f"; {w}" for w in (self.lock_problem, self.calendar_warning) if w)
        if not self.overdue:
            line = f"all {len(passed)} {self.calendar} sessions whose window has passed are done"
            return f"NOT OK: {line}{warning}" if warning else f"OK: {line}"
        late = ", ".join(f"{s.session} {s.state.replace('_', ' ')}" for s in reversed(self.overdue))
        return (f"NOT OK: {len(self.overdue)} of {len(passed)} sessions whose window has passed are not done: "
                f"{late}{warning}")

    def to_json(self, tasks: bool = False) -> dict:
        """The `status --json` document; its key names are part of the tool's interface.

        `tasks` adds each session's tasks (`status --date D --json`); the lookback view leaves
        them out, as its table does, so 250 sessions stay a small document.
        """
        return {
            "now": iso(self.now),
            "calendar": self.calendar,
            "timezone": self.timezone,
            "order": "newest_first",
            "lookback": self.lookback,
            "ok": self.ok,
            "not_done": [s.session.isoformat() for s in self.overdue],
            "sessions": [_session_json(s, tasks) for s in self.sessions],
            "next_window": window_json(self.next_window, self.now, self.timezone),
            "lock": None if self.holder is None else {"host": self.holder.host, "pid": self.holder.pid,
                                                      "since": self.holder.since, "run_id": self.holder.run_id,
                                                      "foreign": self.holder.foreign},
            "last_run": self.last_run,
            "calendar_warning": self.calendar_warning,
            **(self.sources.to_json() if self.sources else {}),
            "slow_tasks": [{k: v for k, v in t.to_json().items() if k != "sessions"} for t in self.slow],
            "window_risk": self.risk.to_json() if self.risk else None,
            "containment": self.containment,
            "warnings": list(self.warnings),
        }

    def trend_json(self) -> dict:
        """The `status --task NAME --json` document: the task's series, oldest first, and its figures."""
        return {"now": iso(self.now), "calendar": self.calendar, "timezone": self.timezone, "order": "oldest_first",
                "lookback": self.lookback, **self.trend.to_json(),
                **(self.sources.to_json() if self.sources else {})}


def _session_json(s: SessionView, tasks: bool) -> dict:
    doc = {
        "date": s.session.isoformat(),
        "state": s.state,
        "window_start": iso(s.window.start),
        "window_end": iso(s.window.end),
        "window_passed": s.window_passed,
        "tasks_completed": s.tasks_completed,
        "tasks_total": s.tasks_total,
        "attempts": s.attempts,
        "started_at": iso(s.started_at),
        "completed_at": iso(s.completed_at),
        "duration_seconds": s.duration_seconds,
        "run_id": s.run_id,
        "note": s.note,
        "override": s.override,
        "deadline": iso(s.deadline),
        "done_at": iso(s.done_at),
        "late_seconds": s.late_seconds,
        "task_list_differences": [{"task": d.task, "how": d.how} for d in s.task_list],
    }
    if tasks:
        bars = {t.name: bar for t in s.tasks if s.timeline and (bar := s.timeline.latest(t.name))}
        doc["timeline"] = s.timeline.to_json() if s.timeline else None
        doc["cycles"] = [c.to_json() for c in s.cycles]
        doc["tasks"] = [{
            "name": t.name,
            "status": t.status,
            "attempts": t.attempts,
            "started_at": iso(t.started_at),
            "finished_at": iso(t.finished_at),
            "duration_seconds": t.duration_seconds,
            "error": t.error,
            "note": t.note,
            "traceback": t.traceback,
            "bar": bars[t.name].to_json() if t.name in bars else None,
        } for t in s.tasks]
    return doc


def _span(seconds: float) -> str:
    """A lateness: `14h02m`, `25m`, `40s`."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{seconds:.0f}s"
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def window_json(window: Window | None, now: dt.datetime, tz: str) -> dict | None:
    if window is None:
        return None
    local = ZoneInfo(tz)
    return {
        "session": window.session.isoformat(),
        "start": iso(window.start),
        "end": iso(window.end),
        "start_local": window.start.astimezone(local).isoformat(timespec="minutes"),
        "end_local": window.end.astimezone(local).isoformat(timespec="minutes"),
        "open": window.contains(now),
    }
