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
from dataclasses import replace

from tradeul_maint.base.errors import UsageError
from tradeul_maint.base.redact import scrub
from tradeul_maint.config.settings import Settings
from tradeul_maint.plan import trends
from tradeul_maint.plan.calendar import TradingCalendar, Window
from tradeul_maint.plan.explain import explain_job, failed_tasks, waiting_for_data, waiting_tasks, waits_text
from tradeul_maint.plan.horizon import latest_opened
from tradeul_maint.plan.planner import Plan, expiry
from tradeul_maint.run.containment import detect
from tradeul_maint.state.document import COMPLETED, FAILED, PENDING, SKIPPED, SessionStatus, TaskRecord, parse_time
from tradeul_maint.state.lock import LockHolder
from tradeul_maint.state.store import Overview
from tradeul_maint.state.tasklist import ONLY_HERE, Difference, differences, summary, task_list
from tradeul_maint.view import history
from tradeul_maint.view.model import (CORRUPT, DONE, DUE, ERROR_OUTPUT_LINES, EXPIRED, FAILED_STATE, INTERRUPTED,
                                      MISSING, NOT_YET_DUE, RUNNING, WAITING, SessionView, StatusView, TaskView)
from tradeul_maint.view.sources import sources


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
    """`left`: why the cron plan leaves this session now (horizon.Deferred), if it does."""
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
