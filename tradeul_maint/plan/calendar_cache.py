"""The calendar's schedule cache: derived from exchange-calendars once, kept as a small JSON file.

exchange-calendars (and the pandas it imports) costs half a second and 100 MB to load, which
a cron tick every few minutes should not pay. So the schedule is built from it once and kept
in the state directory, keyed by calendar code and library version, and rebuilt before it
runs out (CACHE_MAX_AGE).

A container starts every tick with an empty state directory, so a cache can also be built
into the image (`tradeul-maint calendar --write-cache DIR`, read from
TRADEUL_MAINT_CALENDAR_CACHE before the state directory). That one cannot be refreshed
weekly, and need not be: a schedule derived from one exchange-calendars version stays right
for as long as that version is installed; only its reach (the library builds a year past
the day it is asked) runs out. So a prebuilt cache is used whatever its age while it is for
the installed version and still reaches `expiry_warning_days` ahead: the point from which a
fresh build would reach further than the warning. Only then does a tick rebuild it.

The file holds some 5,000 sessions as three runs of small integers (day steps, open steps,
session lengths), which load in well under a millisecond, and the names exchange-calendars
gives its holidays and early closes ("Christmas", "Christmas Eve"), so that "not a session"
messages and `calendar` can name them without loading pandas. Whatever wrote a file, it is
used only when well formed; otherwise it is rebuilt.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import operator
from importlib import metadata
from pathlib import Path
from zoneinfo import ZoneInfo

from tradeul_maint.base import safejson
from tradeul_maint.base.errors import ConfigError, UsageError
from tradeul_maint.base.files import read_regular, replace_file

CACHE_FORMAT = 4  # 4: holiday and early-close names; an older cache is rebuilt
CACHE_MAX_AGE = dt.timedelta(days=7)
CACHE_LIMIT = 16 * 1024 * 1024  # bytes; a cache is about 100 KB


def library_version() -> str:
    try:
        return metadata.version("exchange-calendars")
    except metadata.PackageNotFoundError:
        return "unknown"


def read_schedule(code: str, cache_dir: Path, today: dt.date, prebuilt: Path | None = None,
                  reach_days: int = 0) -> tuple[dict, str]:
    """The schedule from a current cache (`prebuilt` first, while it reaches `reach_days` ahead, then
    `cache_dir`), else built from exchange-calendars and cached; and the file it came from ("" when built)."""
    name = cache_name(code, library_version())
    if prebuilt is not None and (data := _read_cache(prebuilt / name, today, reach_days=reach_days)) is not None:
        return data, str(prebuilt / name)
    if (data := _read_cache(cache_dir / name, today)) is not None:
        return data, str(cache_dir / name)
    data = _build_schedule(code, library_version(), today)
    _write_cache(cache_dir / name, data)
    return data, ""


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


def unpack(packed: dict[str, list[int]]) -> tuple[list[int], list[int], list[int]]:
    opens = list(itertools.accumulate(packed["opens"]))
    return list(itertools.accumulate(packed["days"])), opens, list(map(operator.add, opens, packed["closes"]))


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
