"""The plan in words: what a session's state is, why a task waits, what a job runs, for status, check and the dry run. Pure, as the planner is."""

from __future__ import annotations


from tradeul_maint.config.settings import RunSettings, ScheduleSettings, TaskSpec
from tradeul_maint.plan.calendar import TradingCalendar, Window
from tradeul_maint.state.document import FAILED, PENDING, SKIPPED, SessionStatus


def caught_up(status: SessionStatus, task: str) -> bool:
    """Skipped for the catch-up policy (a reason recorded, never a failure's error): counts as done."""
    record = status.details.get(task)
    return status.tasks.get(task) == SKIPPED and record is not None and bool(record.reason)


def waits_phrase(waiting: dict[str, str]) -> str:
    """`clear_realtime waits for the close at 16:00 America/New_York`, one per task."""
    return "; ".join(f"{name} {why}" for name, why in waiting.items())


def failed_tasks(status: SessionStatus | None) -> list[str]:
    """Tasks its last cycle failed: failed, or skipped for a failure (a catch-up skip records a reason instead)."""
    if status is None or status.corrupt:
        return []
    return [n for n, s in status.tasks.items() if s == FAILED or (s == SKIPPED and not caught_up(status, n))]


def waiting_tasks(status: SessionStatus | None) -> list[str]:
    """Tasks a finished cycle left pending with a reason: waiting for the close (market_closed_only), or for their
    data (wait_for, and what runs after such a task)."""
    if status is None or status.corrupt or not status.finished:
        return []
    return [n for n, s in status.tasks.items() if s == PENDING and status.details.get(n)
            and status.details[n].reason]


def waiting_for_data(status: SessionStatus | None) -> list[str]:
    """The waiting tasks that wait for data (their record says since when): every `run` probes again."""
    return [n for n in waiting_tasks(status) if status.details[n].waiting_since]


def waits_text(status: SessionStatus) -> str:
    """`reset waited for the close`, `sync waits for data`, or both: what a finished cycle left waiting."""
    data = waiting_for_data(status)
    close = [n for n in waiting_tasks(status) if n not in data]
    return "; ".join(([f"{', '.join(close)} waited for the close"] if close else []) +
                     ([f"{', '.join(data)} {'waits' if len(data) == 1 else 'wait'} for data"] if data else []))


def explain(tasks: tuple[TaskSpec, ...]) -> str:
    """Each task's policy and dependencies as `decide` reads them, for `check`."""
    return "; ".join(f"{t.name}: {'every session' if t.catchup == 'all' else 'the newest session only'}"
                     + (", never while the exchange is open" if t.market_closed_only else "")
                     + (f", once {t.wait_for[0]} says its data is there" if t.wait_for else "")
                     + (f", after {', '.join(t.after)}" if t.after else "") for t in tasks)


def explain_job(schedule: ScheduleSettings) -> str:
    """The job's window and which missed sessions it runs, for `check`."""
    missed = {"all": "missed sessions caught up oldest first", "latest": "only the newest missed session caught up",
              "none": "a missed window expires (never caught up)"}[schedule.catchup]
    return f"window {schedule.window_start} for {schedule.window_minutes} min, {missed}"


def shape_warnings(tasks: tuple[TaskSpec, ...]) -> list[tuple[str, str]]:
    """(task, warning) for shapes that load but that an operator could misread; `check` shows them."""
    warnings = []
    for t in tasks:
        if t.builtin == "redis.delete_keys" and not t.market_closed_only:
            warnings.append((t.name, "redis.delete_keys without market_closed_only = true: `recover`, `run --date` "
                                     "or a window in market hours can delete live keys while the exchange is open; "
                                     "add market_closed_only = true"))
        if t.market_closed_only:
            after = [d.name for d in tasks if t.name in d.after and not d.market_closed_only]
            if after:
                warnings.append((t.name, f"market_closed_only, and {', '.join(after)} "
                                         f"{'runs' if len(after) == 1 else 'run'} after it: while the "
                                         "exchange is open they wait for the close too; set market_closed_only = "
                                         "true on them to say so, or drop the dependency"))
    return warnings


def state_phrase(status: SessionStatus | None, run: RunSettings) -> str:
    """A session that is not done, in a few words: `missed` only when it never started."""
    if status is None:
        return "missed"
    if status.corrupt:
        return "status document unreadable"
    if status.unfinished:
        return f"interrupted, attempt {status.attempts} of {run.max_attempts}"
    if failed_tasks(status):
        return f"failed, attempt {status.attempts} of {run.max_attempts}"
    if waiting_tasks(status):
        return waits_text(status)
    return "not finished"


def describe(status: SessionStatus | None) -> str:
    if status is None:
        return "no maintenance recorded"
    if status.corrupt:
        return f"status document unreadable ({status.corrupt})"
    if status.done:
        return "done"
    failed = failed_tasks(status)
    if status.unfinished:
        return "interrupted or still running"
    if failed:
        return f"failed ({', '.join(failed)})"
    if waiting_tasks(status):
        return waits_text(status)
    return "not finished"


def window_text(window: Window, calendar: TradingCalendar) -> str:
    """`17:00-17:30`, exchange-local; `17:00-09:00 the next day` for a window that ends on a later day."""
    start, end = (moment.astimezone(calendar.tz) for moment in (window.start, window.end))
    return f"{start:%H:%M}-{end:%H:%M}" + (" the next day" if end.date() > start.date() else "")
