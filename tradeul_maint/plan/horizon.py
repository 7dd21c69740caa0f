"""Which sessions a command looks at: the lookback's, the latest whose window has opened, a --since/--until range, one --date; and a session left alone, with why."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tradeul_maint.base.errors import UsageError
from tradeul_maint.config.settings import ScheduleSettings
from tradeul_maint.plan.calendar import TradingCalendar


@dataclass(frozen=True)
class Deferred:
    session: dt.date
    reason: str
    waiting: bool = False  # what is left waits for the close (market_closed_only); the next run after it goes on
    expired: bool = False  # never run again by `run` or `recover` (the job's catchup), only by --date D --force


OPENED_REACH = 3  # sessions, today's included, among which the latest opened window always is


def sessions_reached(lookback: int) -> int:
    """How many sessions back (today's included) the view can reach: what status_ttl_days must cover."""
    return max(lookback, OPENED_REACH)


def sessions_in_view(now: dt.datetime, calendar: TradingCalendar, schedule: ScheduleSettings) -> list[dt.date]:
    """The lookback: the last `lookback_sessions` sessions up to today, oldest first, and always the
    latest session whose window has opened.

    That one may be older than the lookback when the lookback is short and the window opens
    after midnight (`close+9h` puts Tuesday's window on Wednesday at 01:00), or before today's
    window (with `lookback_sessions = 1` at noon, the session of the day before), or newer than
    today (`open-10h` opens Monday's window on Sunday at 23:30): the session an operator expects
    `run` to run and `status --check` to watch is never out of view.
    """
    calendar.check_current(now)
    sessions = calendar.sessions_up_to(calendar.local_date(now), schedule.lookback_sessions)
    latest = latest_opened(now, calendar, schedule)
    return sessions if latest is None or latest in sessions else sorted([latest, *sessions])


def latest_opened(now: dt.datetime, calendar: TradingCalendar, schedule: ScheduleSettings) -> dt.date | None:
    """The newest session whose window opened at or before `now`.

    A window opens at most 24 hours after its session's close, so it is one of the last
    OPENED_REACH sessions up to today; or at most 24 hours before its session's open, so
    at most tomorrow's session.
    """
    tomorrow = calendar.local_date(now) + dt.timedelta(days=1)
    for session in reversed(calendar.sessions_up_to(tomorrow, OPENED_REACH + 1)):
        if calendar.window(session, schedule.window_start, schedule.window_minutes).start <= now:
            return session
    return None


def recovery_sessions(now: dt.datetime, calendar: TradingCalendar, schedule: ScheduleSettings,
                      since: dt.date | None = None, until: dt.date | None = None
                      ) -> tuple[list[dt.date], tuple[Deferred, ...]]:
    """What `recover` looks at: the lookback (or since..until) sessions whose window has passed.

    A session whose window is still ahead or open is left to `run`, as `status --check` does.
    """
    calendar.check_current(now)
    today = calendar.local_date(now)
    if since is None and until is not None:
        raise UsageError("--until needs --since")
    if since is None:
        candidates = sessions_in_view(now, calendar, schedule)
    else:
        until = until or today
        for option, day in (("--since", since), ("--until", until)):
            if day > today:
                raise UsageError(f"{option} {day} is in the future (today is {today} in {calendar.tz.key})")
            calendar.check_bounds(day)
        if since > until:
            raise UsageError(f"--since {since} is after --until {until}")
        candidates = calendar.sessions_between(since, until)
        if not candidates:
            closed = "; ".join(f"{day} {why}" for day, why in calendar.closures(since, until)[:5])
            following = calendar.next_session_after(until)
            raise UsageError(f"there is no {calendar.code} trading session from {since} to {until}"
                             + (f" ({closed})" if closed else "")
                             + (f"; the next session is {following}" if following else ""))
    sessions, deferred = [], []
    for session in candidates:
        if now < calendar.window(session, schedule.window_start, schedule.window_minutes).end:
            deferred.append(Deferred(session, "its window has not passed yet (`run` runs it)"))
        else:
            sessions.append(session)
    return sessions, tuple(deferred)


def check_session(calendar: TradingCalendar, session: dt.date, now: dt.datetime,
                  newest: dt.date | None = None) -> None:
    """A date `run --date` and `status --date` may name: a session, not after today unless its window has opened
    (`newest`: a window before the open may open the evening before)."""
    today = calendar.local_date(now)
    if session > today and session != newest:
        raise UsageError(f"{session} is in the future (today is {today} in {calendar.tz.key})")
    if not calendar.is_session(session):
        raise UsageError(calendar.no_session(session))
