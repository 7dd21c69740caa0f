"""The calendar command's view: the calendar in use, how far it reaches, its overrides and the next sessions.

Pure, like the status view: the time, the calendar and the settings in, plain values out.
"""

from __future__ import annotations

import datetime as dt

from tradeul_maint.config.settings import Settings
from tradeul_maint.plan.calendar import TradingCalendar
from tradeul_maint.state.document import iso
from tradeul_maint.view.model import window_json
from tradeul_maint.view.overview import next_window
from tradeul_maint.view.sources import sources


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
                upcoming.append({**window_json(window, now, calendar.tz.key), "close": iso(calendar.close(session)),
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
                  "next_window": window_json(next_window(now, calendar, settings.for_job(job)), now,
                                              calendar.tz.key)} for job in settings.jobs],
        "holidays": [{"date": day.isoformat(), "name": why} for day, why in next_closures(now, calendar)],
        **sources(settings).to_json(),
    }
