"""The trading calendar: which days are sessions, when they open and close, when their window is.

exchange-calendars (and the pandas it imports) answers these questions, but costs half a
second and 100 MB to load, which a cron tick every few minutes should not pay. So the
schedule is derived from it once and kept as a small JSON file in the state directory,
keyed by calendar code and library version, and rebuilt before it runs out. Everything
else here is plain datetime and zoneinfo arithmetic on that schedule, overrides included.

A container starts every tick with an empty state directory, so a cache can also be built
into the image (`tradeul-maint calendar --write-cache DIR`, read from
TRADEUL_MAINT_CALENDAR_CACHE before the state directory). That one cannot be refreshed
weekly, and need not be: a schedule derived from one exchange-calendars version stays right
for as long as that version is installed; only its reach (the library builds a year past
the day it is asked) runs out. So a prebuilt cache is used whatever its age while it is for
the installed version and still reaches `expiry_warning_days` ahead: the point from which a
fresh build would reach further than the warning. Only then does a tick rebuild it.

The file holds some 5,000 sessions as three runs of small integers (day steps, open steps,
session lengths), which load in well under a millisecond; the calendar keeps them as
integers (day ordinals, Unix seconds) and makes dates and datetimes only of the sessions
an answer is about, since a cron tick looks at a handful of them. It also holds the names
exchange-calendars gives its holidays and early closes ("Christmas", "Christmas Eve"), so
that "not a session" messages and `calendar` can name them without loading pandas.
"""

from __future__ import annotations

import bisect
import collections
import datetime as dt
import itertools
import json
import operator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from zoneinfo import ZoneInfo

from tradeul_maint import safejson
from tradeul_maint.errors import CalendarExpiredError, ConfigError, UsageError
from tradeul_maint.files import read_regular, replace_file
from tradeul_maint.settings import CalendarOverrides, WindowStart

CACHE_FORMAT = 4  # 4: holiday and early-close names; an older cache is rebuilt
CACHE_MAX_AGE = dt.timedelta(days=7)
CACHE_LIMIT = 16 * 1024 * 1024  # bytes; a cache is about 100 KB
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


# --- the schedule cache ----------------------------------------------------------------


def library_version() -> str:
    try:
        return metadata.version("exchange-calendars")
    except metadata.PackageNotFoundError:
        return "unknown"


def load_calendar(code: str, overrides: CalendarOverrides, cache_dir: Path,
                  today: dt.date | None = None, prebuilt: Path | None = None) -> TradingCalendar:
    """The calendar from a current cache (`prebuilt` first, then `cache_dir`), else built from exchange-calendars."""
    today = today or dt.date.today()
    version = library_version()
    name = cache_name(code, version)
    data = source = None
    if prebuilt is not None:
        data = _read_cache(prebuilt / name, today, reach_days=overrides.expiry_warning_days)
        source = str(prebuilt / name)
    if data is None:
        data, source = _read_cache(cache_dir / name, today), str(cache_dir / name)
    if data is None:
        data = _build_schedule(code, version, today)
        _write_cache(cache_dir / name, data)
        source = ""
    days, opens, closes = _unpack(data["sessions"])
    hours = tuple(dt.time.fromisoformat(t) for t in data["regular_hours"])
    named = data["names"]
    names = dict(zip(itertools.accumulate(named["days"]), named["names"]))
    return TradingCalendar(code, data["tz"], version, days, opens, closes, overrides, hours, source, names)


def cache_name(code: str, version: str) -> str:
    return f"calendar-{code}-{version}.json"


def write_cache(code: str, directory: Path, today: dt.date | None = None) -> Path:
    """Build the schedule from exchange-calendars into `directory` (an image's prebuilt cache); errors propagate."""
    version = library_version()
    data = _build_schedule(code, version, today or dt.date.today())
    path = directory / cache_name(code, version)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        replace_file(path, json.dumps(data, separators=(",", ":")))
    except OSError as exc:
        raise UsageError(f"--write-cache {directory}: cannot write the calendar cache there: "
                         f"{exc.strerror or exc}") from None
    return path


def _read_cache(path: Path, today: dt.date, reach_days: int | None = None) -> dict | None:
    """The cache at `path` if current: built within CACHE_MAX_AGE, or (`reach_days` given, a prebuilt cache)
    whatever its age while its last session is at least `reach_days` after today."""
    try:
        data = safejson.loads(read_regular(path, CACHE_LIMIT))
        built = dt.date.fromisoformat(data["built_on"])
        if data["format"] != CACHE_FORMAT or not _well_formed(data):
            return None
        sessions = data["sessions"]
        if reach_days is None:
            return data if built <= today < built + CACHE_MAX_AGE else None
        last = dt.date.fromordinal(sum(sessions["days"]))
        return data if (last - today).days >= reach_days else None
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return None  # missing, stale or damaged: rebuild it


def _well_formed(data: dict) -> bool:
    """Whatever wrote the file (a full disk, a hand, another version): a schedule this module can use as it is.

    Days and opens must rise, every close follow its open, the time zone and hours parse, and
    each named day have a name; else ValueError, KeyError or TypeError, and the cache is rebuilt.
    """
    sessions = data["sessions"]
    columns = [sessions["days"], sessions["opens"], sessions["closes"]]
    if not all(isinstance(c, list) and c and len(c) == len(columns[0]) for c in columns) or \
            not all(type(v) is int for c in columns for v in c):
        return False
    steps = (sessions["days"][1:], sessions["opens"][1:], sessions["closes"])
    if not all(v > 0 for column in steps for v in column):
        return False
    dt.date.fromordinal(sessions["days"][0])
    dt.date.fromordinal(sum(sessions["days"]))  # within the dates Python has
    names = data["names"]
    if not (isinstance(names["days"], list) and isinstance(names["names"], list)
            and len(names["days"]) == len(names["names"]) and all(type(v) is int for v in names["days"])
            and all(v > 0 for v in names["days"][1:]) and all(isinstance(n, str) for n in names["names"])):
        return False
    ZoneInfo(str(data["tz"]))
    open_hour, close_hour = data["regular_hours"]
    dt.time.fromisoformat(open_hour), dt.time.fromisoformat(close_hour)
    return True


def _pack(days: list[int], opens: list[int], closes: list[int]) -> dict[str, list[int]]:
    """The schedule as the cache file holds it: the first value then the steps; closes as seconds after the open."""
    return {"days": _steps(days), "opens": _steps(opens), "closes": list(map(operator.sub, closes, opens))}


def _steps(values: list[int]) -> list[int]:
    """The first value, then the difference of each to the one before: small numbers, which itertools.accumulate
    turns back."""
    return values[:1] + list(map(operator.sub, values[1:], values[:-1]))


def _unpack(packed: dict[str, list[int]]) -> tuple[list[int], list[int], list[int]]:
    opens = list(itertools.accumulate(packed["opens"]))
    return list(itertools.accumulate(packed["days"])), opens, list(map(operator.add, opens, packed["closes"]))


def _dates(ordinals: list[int]) -> list[dt.date]:
    return list(map(dt.date.fromordinal, ordinals))


def _write_cache(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, json.dumps(data, separators=(",", ":")))
    except OSError:
        pass  # a read-only state dir only costs the rebuild next time


def _build_schedule(code: str, version: str, today: dt.date) -> dict:
    import warnings

    with warnings.catch_warnings():
        # exchange-calendars 4.13 under pandas 3.1 warns about its own use of pandas.
        warnings.simplefilter("ignore")
        import exchange_calendars as xcals

        try:
            cal = xcals.get_calendar(code)
        except xcals.errors.InvalidCalendarName:
            raise ConfigError(f"[schedule] calendar = {code!r} is not an exchange-calendars code "
                              "(e.g. XNYS, XNAS, XLON, XTKS)") from None
        schedule = cal.schedule
        opens = [int(ts.timestamp()) for ts in schedule["open"]]
        closes = [int(ts.timestamp()) for ts in schedule["close"]]
        days = [d.date().toordinal() for d in schedule.index]
        names = _day_names(cal, schedule.index[0], schedule.index[-1])
    tz = ZoneInfo(str(cal.tz))
    local_hours = collections.Counter(
        (dt.datetime.fromtimestamp(o, tz).strftime("%H:%M"), dt.datetime.fromtimestamp(c, tz).strftime("%H:%M"))
        for o, c in zip(opens[-250:], closes[-250:]))
    return {
        "format": CACHE_FORMAT,
        "regular_hours": list(local_hours.most_common(1)[0][0]),
        "code": code,
        "version": version,
        "built_on": today.isoformat(),
        "tz": str(cal.tz),
        "sessions": _pack(days, opens, closes),
        "names": {"days": _steps(sorted(names)), "names": [names[d] for d in sorted(names)]},
    }


def _day_names(cal, first, last) -> dict[int, str]:
    """Day ordinal -> the name exchange-calendars gives it: its regular holidays and its early closes.

    Ad-hoc closures (a national day of mourning) have no name in the library; they are left out.
    """
    named: dict[int, str] = {}
    calendars = [cal.regular_holidays] + [holidays for _, holidays in cal.special_closes]
    for holidays in calendars:
        if holidays is None or not hasattr(holidays, "holidays"):
            continue
        for day, name in holidays.holidays(first, last, return_name=True).items():
            if isinstance(name, str) and name:
                named.setdefault(day.date().toordinal(), name)
    return named
