"""The trading calendar: which days are sessions, when they open and close, when their window is.

Plain datetime and zoneinfo arithmetic on a schedule exchange-calendars gave once and
calendar_cache.py keeps (so a cron tick never loads pandas), overrides included. The
calendar keeps the sessions as integers (day ordinals, Unix seconds) and makes dates and
datetimes only of the sessions an answer is about, since a cron tick looks at a handful of
them; the names of holidays and early closes come with the schedule.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import operator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from tradeul_maint.base.errors import CalendarExpiredError, ConfigError, UsageError
from tradeul_maint.config.settings import CalendarOverrides, WindowStart
from tradeul_maint.plan import calendar_cache

UTC = dt.timezone.utc


@dataclass(frozen=True)
class Window:
    """When a session's maintenance may start: [start, end) in UTC."""

    session: dt.date
    start: dt.datetime
    end: dt.datetime

    def contains(self, moment: dt.datetime) -> bool:
        return self.start <= moment < self.end


class TradingCalendar:
    """Sessions with their open and close (UTC), with the operator's overrides applied.

    `days` are the sessions' day ordinals (`date.toordinal()`), ascending; `opens` and
    `closes` their open and close in Unix seconds.
    """

    def __init__(self, code: str, tz: str, version: str, days: list[int], opens: list[int], closes: list[int],
                 overrides: CalendarOverrides = CalendarOverrides(),
                 regular_hours: tuple[dt.time, dt.time] = (dt.time(9, 30), dt.time(16, 0)), source: str = "",
                 names: dict[int, str] | None = None):
        self.code = code
        self.regular_hours = regular_hours
        # Day ordinal -> the library's name for it: a holiday (not a session) or an early close (a session).
        self.names = names or {}
        self.source = source  # the cache file it was read from; empty when it was built from the library
        self.tz = ZoneInfo(tz)
        self.version = version
        self.overrides = overrides
        self.library_last_session = dt.date.fromordinal(days[-1]) if days else None
        if overrides.sessions or overrides.closed:
            rows = list(zip(days, opens, closes))
            known = set(days)
            for day in sorted(overrides.sessions):
                if day.toordinal() not in known:
                    # An extra session trades the calendar's regular hours, on that day's UTC offset.
                    start, end = (int(dt.datetime.combine(day, t, self.tz).timestamp()) for t in regular_hours)
                    rows.append((day.toordinal(), start, end))
            closed = {day.toordinal() for day in overrides.closed}
            rows = sorted(row for row in rows if row[0] not in closed)
            days, opens, closes = (list(column) for column in zip(*rows)) if rows else ([], [], [])
        self._days, self._opens, self._closes = days, opens, list(closes)
        for day, local_close in overrides.early_closes.items():
            i = self._index(day)
            if i is None:
                raise ConfigError(f"[calendar] early_closes: {day} is not a session of {code} "
                                  f"({self.closed_reason(day)})")
            close = dt.datetime.combine(day, local_close, self.tz).astimezone(UTC)
            if close.timestamp() <= self._opens[i]:
                raise ConfigError(f"[calendar] early_closes: {day} {local_close:%H:%M} is before the open")
            self._closes[i] = int(close.timestamp())
        if not self._days:
            raise ConfigError(f"calendar {code} has no sessions")

    # --- plain questions -------------------------------------------------------------

    @property
    def first_session(self) -> dt.date:
        return dt.date.fromordinal(self._days[0])

    @property
    def last_session(self) -> dt.date:
        return dt.date.fromordinal(self._days[-1])

    def _index(self, day: dt.date) -> int | None:
        ordinal = day.toordinal()
        i = bisect.bisect_left(self._days, ordinal)
        return i if i < len(self._days) and self._days[i] == ordinal else None

    def is_session(self, day: dt.date) -> bool:
        self.check_bounds(day)
        return self._index(day) is not None

    def check_bounds(self, day: dt.date) -> None:
        if not self.first_session <= day <= self.last_session:
            raise UsageError(f"{day} is outside the {self.code} calendar ({self.first_session} to "
                             f"{self.last_session})")

    def open(self, session: dt.date) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._opens[self._require(session)], UTC)

    def close(self, session: dt.date) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._closes[self._require(session)], UTC)

    def _require(self, session: dt.date) -> int:
        i = self._index(session)
        if i is None:
            raise UsageError(self.no_session(session))
        return i

    # --- what a day is -----------------------------------------------------------------

    def closed_reason(self, day: dt.date) -> str:
        """Why a day that is not a session is not one: `Christmas`, `a Saturday`, `closed by override`."""
        if day in self.overrides.closed:
            return "closed by override"
        if name := self.names.get(day.toordinal()):
            return name
        if day.weekday() >= 5:
            return f"a {day:%A}"
        return "an exchange holiday"

    def no_session(self, day: dt.date) -> str:
        """The one line every "not a session" error says: why, and the next session."""
        following = self.next_session_after(day)
        after = f"; the next session is {following} ({following:%A})" if following else ""
        return f"{day} is not a trading session of {self.code} ({self.closed_reason(day)}){after}"

    def closures(self, first: dt.date, last: dt.date) -> list[tuple[dt.date, str]]:
        """The weekdays in [first, last] that are not sessions, with why: holidays and closures."""
        days = []
        day = first
        while day <= last:
            if day.weekday() < 5 and self._index(day) is None:
                days.append((day, self.closed_reason(day)))
            day += dt.timedelta(days=1)
        return days

    def early_close_note(self, session: dt.date) -> str | None:
        """`early close 13:00 (Christmas Eve)` for a session that closes before the regular close; else None."""
        if session in self.overrides.early_closes:
            return self.overrides.note(session)
        close = self.close(session).astimezone(self.tz)
        if close.time() >= self.regular_hours[1]:
            return None
        name = self.names.get(session.toordinal())
        return f"early close {close:%H:%M}" + (f" ({name})" if name else "")

    def sessions_between(self, first: dt.date, last: dt.date) -> list[dt.date]:
        """Sessions in [first, last], oldest first."""
        days = self._days
        return _dates(days[bisect.bisect_left(days, first.toordinal()):bisect.bisect_right(days, last.toordinal())])

    def sessions_up_to(self, last: dt.date, count: int) -> list[dt.date]:
        """The `count` sessions on or before `last`, oldest first."""
        end = bisect.bisect_right(self._days, last.toordinal())
        return _dates(self._days[max(0, end - count):end])

    def next_session_after(self, day: dt.date) -> dt.date | None:
        i = bisect.bisect_right(self._days, day.toordinal())
        return dt.date.fromordinal(self._days[i]) if i < len(self._days) else None

    def local_date(self, moment: dt.datetime) -> dt.date:
        return moment.astimezone(self.tz).date()

    def market_open_at(self, moment: dt.datetime) -> bool:
        """True between a session's open and close."""
        ts = moment.timestamp()
        i = bisect.bisect_right(self._opens, ts) - 1
        return i >= 0 and self._opens[i] <= ts < self._closes[i]

    def open_until(self, moment: dt.datetime) -> dt.datetime | None:
        """The close of the session trading at `moment`, or None when the market is closed then."""
        ts = moment.timestamp()
        i = bisect.bisect_right(self._opens, ts) - 1
        return dt.datetime.fromtimestamp(self._closes[i], UTC) if i >= 0 and ts < self._closes[i] else None

    def max_span_days(self, sessions: int) -> int:
        """The most calendar days that `sessions` consecutive sessions (plus today) can cover."""
        days = self._days
        if len(days) <= sessions:
            return days[-1] - days[0] + 1
        return max(map(operator.sub, days[sessions:], days[:-sessions])) + 1

    # --- windows ---------------------------------------------------------------------

    def window(self, session: dt.date, start: WindowStart, minutes: int) -> Window:
        if start.wall_time is not None:
            self._require(session)
            # zoneinfo resolves the wall time with that day's UTC offset, so DST is handled here.
            begin = dt.datetime.combine(session, start.wall_time, self.tz).astimezone(UTC)
        elif start.close_offset is not None:
            begin = self.close(session) + start.close_offset
        else:  # elapsed time from that session's open, late opens included
            begin = self.open(session) + start.open_offset
        return Window(session, begin, begin + dt.timedelta(minutes=minutes))

    def override_note(self, day: dt.date) -> str | None:
        return self.overrides.note(day)

    def expiry_warning(self, now: dt.datetime) -> str | None:
        """A warning when the library's calendar ends within `expiry_warning_days`, else None."""
        last = self.library_last_session
        days_left = (last - self.local_date(now)).days
        if 0 <= days_left < self.overrides.expiry_warning_days:
            return (f"the {self.code} calendar of exchange-calendars {self.version} ends on {last}, in {days_left} "
                    "days: upgrade exchange-calendars before then")
        return None

    def check_current(self, now: dt.datetime) -> None:
        """Refuse to decide anything when the calendar does not reach today."""
        if self.local_date(now) > self.library_last_session:
            raise CalendarExpiredError(
                f"the {self.code} calendar of exchange-calendars {self.version} ends on {self.library_last_session}, "
                f"before today ({self.local_date(now)}): upgrade exchange-calendars")


def load_calendar(code: str, overrides: CalendarOverrides, cache_dir: Path,
                  today: dt.date | None = None, prebuilt: Path | None = None) -> TradingCalendar:
    """The calendar from a current cache (`prebuilt` first, then `cache_dir`), else built from exchange-calendars."""
    data, source = calendar_cache.read_schedule(code, cache_dir, today or dt.date.today(), prebuilt,
                                                overrides.expiry_warning_days)
    days, opens, closes = calendar_cache.unpack(data["sessions"])
    hours = tuple(dt.time.fromisoformat(t) for t in data["regular_hours"])
    named = data["names"]
    names = dict(zip(itertools.accumulate(named["days"]), named["names"]))
    return TradingCalendar(code, data["tz"], calendar_cache.library_version(), days, opens, closes, overrides, hours,
                           source, names)


def _dates(ordinals: list[int]) -> list[dt.date]:
    return list(map(dt.date.fromordinal, ordinals))
