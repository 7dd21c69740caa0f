"""The operator's view: the state of each recent session, the next window, and who holds the lock.

Pure, like the planner: it takes the time, the calendar, the settings, what the store
read in one round trip (an `Overview`) and the cron plan for those states, and returns a
`StatusView` that `status` renders as a table, one session task by task, or JSON, and that
`status --check` sums up. What a run would do next (retry after 17:42, gave up, wait for
the close) is the plan's word, never worked out again here.

A session is in exactly one state:

- `done`: its status document says all_success and has completed_at (legacy documents too);
- `failed`: its last cycle finished with a task failed or skipped (or not run: `--task`);
- `waiting`: its last cycle finished with nothing failed and `market_closed_only` tasks left,
  which wait for the close; the first `run` after it finishes the session;
- `running` / `interrupted`: a cycle started and did not finish; running while the lock
  is held by that cycle's run (or by a holder we cannot tell apart), interrupted otherwise;
- `corrupt`: the document does not parse (never done);
- `expired`: not done, and never to be run automatically: its window ended (the job's catchup
  "none") or a newer session's window opened (catchup "latest"); `status --check` counts it
  as not done only until a later session of the job is done;
- `missing`: no document and its window has passed;
- `due`: no document and its window is open now;
- `not_yet_due`: no document and its window has not opened.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from tradeul_maint import history, trends
from tradeul_maint.calendar import TradingCalendar, Window
from tradeul_maint.containment import detect
from tradeul_maint.history import CycleView, Timeline
from tradeul_maint.lock import LockHolder
from tradeul_maint.planner import (Plan, expiry, explain_job, failed_tasks, latest_opened, waiting_for_data,
                                   waiting_tasks, waits_text)
from tradeul_maint.errors import UsageError
from tradeul_maint.redact import scrub
from tradeul_maint.settings import Settings
from tradeul_maint.sources import Sources, sources
from tradeul_maint.state import (COMPLETED, FAILED, PENDING, SKIPPED, SessionStatus, TaskRecord, iso,
                                 parse_time)
from tradeul_maint.store import Overview
from tradeul_maint.tasklist import ONLY_HERE, Difference, differences, summary, task_list
from tradeul_maint.trends import Trend, WindowRisk

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
    # Where this host's configured tasks differ from the task list its latest cycle recorded (tasklist.py).
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
    policy: str = ""  # the job's window and catch-up policy, in words (planner.explain_job)
    containment: str | None = None  # what keeps a run's task processes together on this host (containment.py)

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
            "next_window": _window_json(self.next_window, self.now, self.timezone),
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


def build(now: dt.datetime, calendar: TradingCalendar, settings: Settings, seen: Overview,
          sessions: list[dt.date], detail: bool = False, task: str | None = None,
          plan: Plan | None = None) -> StatusView:
    """The view of `sessions` (any order) as read in `seen`.

    The lookback's view (not `detail`) also names the tasks slower than usual and the window
    at risk, from the durations of those sessions; `detail` (one session) adds its timeline;
    `task` makes the view that task's trend, and must be a configured task or one the
    documents mention.
    """
    schedule = settings.schedule
    statuses = {s: seen.statuses.get(s) for s in sessions}
    slow = () if detail else tuple(trends.slow_tasks(_task_order(settings, statuses), statuses, settings.run))
    slow_notes = {t.latest.session: [] for t in slow}
    for t in slow:
        slow_notes[t.latest.session].append(t.describe())
    left = {d.session: d.reason for d in plan.deferred} if plan else {}  # why `run` leaves a session now
    newest = latest_opened(now, calendar, schedule)
    here = task_list(settings.tasks)
    views = []
    for session in sorted(sessions, reverse=True):
        window = calendar.window(session, schedule.window_start, schedule.window_minutes)
        view = session_view(session, statuses[session], window, now, seen.holder, settings, calendar.tz,
                            left.get(session))
        if view.state not in (DONE, RUNNING, DUE, NOT_YET_DUE) and \
                (why := expiry(session, statuses[session], now, calendar, schedule, newest)) is not None:
            view = replace(view, state=EXPIRED, note="; ".join(filter(None, (
                f"{why}: `{schedule.rerun} --date {session} --force` runs it",
                view.note if view.state != MISSING else None))))
        if diffs := _task_list_differences(here, statuses[session]):
            view = replace(view, task_list=diffs, note="; ".join(filter(None, (
                view.note, _differ_note(view, diffs, statuses[session], schedule.rerun)))))
        if override := calendar.override_note(session):
            view = replace(view, override=override, note="; ".join(filter(None, (override, view.note))))
        if session in slow_notes:
            view = replace(view, note="; ".join(filter(None, (view.note, "slower than usual: " +
                                                               ", ".join(slow_notes[session])))))
        if detail:
            status = statuses[session]
            cycles = history.cycles(status if view.state != CORRUPT else None, view.state == RUNNING)
            view = replace(view, cycles=cycles, timeline=history.timeline(cycles, now))
        views.append(view)
    trend = None
    if task is not None:
        known = _task_order(settings, statuses)
        if task not in known:
            raise UsageError(f"unknown task '{task}': tasks configured or recorded are {', '.join(known) or 'none'}")
        trend = trends.trend(task, statuses, settings.run.slow_factor, settings.run.slow_min_seconds)
    return StatusView(now, calendar.code, calendar.tz.key, len(sessions), tuple(views),
                      next_window(now, calendar, settings), seen.holder, seen.last_run,
                      calendar.expiry_warning(now), sources(settings), slow,
                      None if detail else trends.window_risk(settings, statuses), trend, settings.job,
                      explain_job(schedule), detect(settings.run.containment).describe())


def _task_list_differences(here: dict[str, str], status: SessionStatus | None) -> tuple[Difference, ...]:
    if status is None or status.corrupt:
        return ()
    return differences(here, status.task_list)


def _differ_note(view: SessionView, diffs: tuple[Difference, ...], status: SessionStatus, run: str) -> str:
    """The differences; for a done session, how to run what it never ran (it is not reopened for them)."""
    note = summary(diffs, status.runner, running=view.state == RUNNING)
    missing = [d.task for d in diffs if d.how == ONLY_HERE and status.tasks.get(d.task) != COMPLETED]
    if view.state == DONE and missing:
        them = "it" if len(missing) == 1 else "them"
        options = " ".join(f"--task {name}" for name in missing)
        note += f" (done without {them}: {run} --date {view.session} {options} runs {them})"
    return note


def _task_order(settings: Settings, statuses: dict) -> list[str]:
    """The configured tasks, then those only the documents mention (removed from the config since)."""
    return list(dict.fromkeys([*settings.task_names, *trends.task_names(statuses)]))


def classify(status: SessionStatus | None, window: Window, now: dt.datetime, holder: LockHolder | None) -> str:
    if status is None:
        return MISSING if now >= window.end else DUE if now >= window.start else NOT_YET_DUE
    if status.corrupt:
        return CORRUPT
    if status.done:
        return DONE
    if waiting_tasks(status) and not failed_tasks(status):
        return WAITING
    if status.unfinished:
        # Only the lock holder writes, so an unfinished cycle is alive only while its run holds the lock.
        mine = holder is not None and (holder.run_id == status.run_id or not holder.run_id or not status.run_id)
        return RUNNING if mine else INTERRUPTED
    return FAILED_STATE


def session_view(session: dt.date, status: SessionStatus | None, window: Window, now: dt.datetime,
                 holder: LockHolder | None, settings: Settings, tz: dt.tzinfo, left: str | None = None) -> SessionView:
    """`left`: why the cron plan leaves this session now (planner.Deferred), if it does."""
    state = classify(status, window, now, holder)
    readable = status is not None and not status.corrupt
    deadline = window.start + settings.schedule.deadline
    names = list(status.tasks) if readable and status.tasks else list(settings.task_names)
    tasks = tuple(_task_view(name, status if readable else None) for name in names)
    return SessionView(
        session=session,
        state=state,
        window=window,
        window_passed=now >= window.end,
        tasks_completed=sum(t.status == COMPLETED for t in tasks),
        tasks_total=len(tasks),
        attempts=status.attempts if readable else 0,
        started_at=status.started_at if readable else None,
        completed_at=status.completed_at if readable else None,
        duration_seconds=_duration(status) if readable else None,
        run_id=status.run_id if readable else None,
        note=_note(state, status, left),
        tasks=tasks,
        deadline=deadline,
        done_at=history.done_at(status) if state == DONE else None,
    )


def next_window(now: dt.datetime, calendar: TradingCalendar, settings: Settings) -> Window | None:
    """The window open now, or else the next one to open; None past the end of the calendar."""
    schedule = settings.schedule
    today = calendar.local_date(now)
    # Start a session back: a window set late after the close (close+8h) may open after midnight.
    candidates = calendar.sessions_up_to(today, 2)
    session = candidates[0] if candidates else calendar.first_session
    for _ in range(10):
        if session is None:
            return None
        window = calendar.window(session, schedule.window_start, schedule.window_minutes)
        if now < window.end:
            return window
        session = calendar.next_session_after(session)
    return None


def _task_view(name: str, status: SessionStatus | None) -> TaskView:
    if status is None:
        return TaskView(name, PENDING, 0, None, None, None, None, None)
    record = status.details.get(name) or TaskRecord()
    state = status.tasks.get(name, PENDING)
    error = None
    if state in (FAILED, SKIPPED) and (record.error or record.output):
        error = "\n".join(filter(None, [record.error, _last_lines(record.output)]))
    return TaskView(name, state, record.attempts, parse_time(record.started_at), parse_time(record.finished_at),
                    record.duration_seconds, scrub(error) if error else None, record.reason,
                    scrub(record.traceback) if record.traceback else None)


def _note(state: str, status: SessionStatus | None, left: str | None) -> str | None:
    if status is None:
        return None
    if state == CORRUPT:
        return f"status document unreadable: {status.corrupt}"
    if state == INTERRUPTED:
        return f"stopped by {status.interrupted}" if status.interrupted else "its runner stopped before the end"
    if state == FAILED_STATE:
        bad = failed_tasks(status)
        why = f"{', '.join(bad)} not completed" if bad else "not all tasks completed"
        return f"{why}; {left}" if left else why
    if state == WAITING:
        if waiting_for_data(status):
            return left or f"{waits_text(status)}: the next run probes again"
        return left or f"{', '.join(waiting_tasks(status))} waited for the close: the next run starts it"
    return None


def _duration(status: SessionStatus) -> float | None:
    """The recorded duration; documents of the replaced service may have only the two timestamps."""
    if isinstance(status.duration_seconds, (int, float)):
        return status.duration_seconds
    if status.started_at and status.completed_at:
        return round((status.completed_at - status.started_at).total_seconds(), 3)
    return None


def _last_lines(output: str | None) -> str | None:
    if not output:
        return None
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return "\n".join(lines[-ERROR_OUTPUT_LINES:]) or None


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


def _window_json(window: Window | None, now: dt.datetime, tz: str) -> dict | None:
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


HOLIDAYS_SHOWN = 5


def next_closures(now: dt.datetime, calendar: TradingCalendar) -> list[tuple[dt.date, str]]:
    """The next HOLIDAYS_SHOWN weekdays without a session from today, with their names, within the calendar."""
    today = calendar.local_date(now)
    last = min(calendar.last_session, today + dt.timedelta(days=366))
    return calendar.closures(today, last)[:HOLIDAYS_SHOWN] if today <= last else []


def calendar_view(now: dt.datetime, calendar: TradingCalendar, settings: Settings, count: int = 5) -> dict:
    """The `calendar` command's document: what calendar is in use, how far it reaches, and the next windows (of the
    first job: the top level's, when it has tasks; `jobs` lists each job's next window)."""
    schedule = settings.jobs[0].schedule if settings.jobs else settings.schedule
    overrides = calendar.overrides
    upcoming = []
    session = calendar.local_date(now)
    while len(upcoming) < count:
        if calendar.first_session <= session <= calendar.last_session and calendar.is_session(session):
            window = calendar.window(session, schedule.window_start, schedule.window_minutes)
            if now < window.end:
                upcoming.append({**_window_json(window, now, calendar.tz.key), "close": iso(calendar.close(session)),
                                 "override": calendar.override_note(session),
                                 "early_close": calendar.early_close_note(session)})
        following = calendar.next_session_after(session)
        if following is None:
            break
        session = following
    return {
        "calendar": calendar.code,
        "timezone": calendar.tz.key,
        "library": f"exchange-calendars {calendar.version}",
        "first_session": calendar.first_session.isoformat(),
        "last_session": calendar.library_last_session.isoformat(),
        "window": f"{schedule.window_start} for {schedule.window_minutes} min",
        "overrides": {
            "closed": sorted(d.isoformat() for d in overrides.closed),
            "sessions": sorted(d.isoformat() for d in overrides.sessions),
            "early_closes": {d.isoformat(): t.strftime("%H:%M") for d, t in sorted(overrides.early_closes.items())},
        },
        "warning": calendar.expiry_warning(now),
        "next_sessions": upcoming,
        "jobs": [{"job": job.name, "window": f"{job.schedule.window_start} for {job.schedule.window_minutes} min",
                  "catchup": job.schedule.catchup,
                  "next_window": _window_json(next_window(now, calendar, settings.for_job(job)), now,
                                              calendar.tz.key)} for job in settings.jobs],
        "holidays": [{"date": day.isoformat(), "name": why} for day, why in next_closures(now, calendar)],
        **sources(settings).to_json(),
    }
