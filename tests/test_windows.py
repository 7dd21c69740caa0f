"""Windows across weekends, NYSE holidays, early closes and both 2026 DST transitions."""

from __future__ import annotations

import datetime as dt

import pytest

from tradeul_maint.base.errors import CalendarExpiredError, UsageError
from tradeul_maint.config.settings import CalendarOverrides, RunSettings, ScheduleSettings, TaskSpec
from tradeul_maint.config.values import parse_window_start
from tradeul_maint.core.basis import parse_now
from tradeul_maint.plan.calendar import load_calendar
from tradeul_maint.plan.planner import plan_cron

TASKS = (TaskSpec(name="a", command=("true",)),)
WALL = ScheduleSettings(auto_recover=False)
CLOSE_PLUS_60 = ScheduleSettings(window_start=parse_window_start("close+60m"), auto_recover=False)


@pytest.fixture(scope="module")
def calendar(calendar_cache):
    return load_calendar("XNYS", CalendarOverrides(), calendar_cache)


def due(calendar, schedule, now_text):
    plan = plan_cron(parse_now(now_text, calendar), calendar, schedule, RunSettings(), TASKS, {})
    return [str(p.session) for p in plan.sessions]


@pytest.mark.parametrize(
    "schedule, now, expected",
    [
        # an ordinary Wednesday: window 17:00-17:30 New York, end exclusive
        (WALL, "2026-11-25T16:59", []),
        (WALL, "2026-11-25T17:00", ["2026-11-25"]),
        (WALL, "2026-11-25T17:29:59", ["2026-11-25"]),
        (WALL, "2026-11-25T17:30", []),
        (WALL, "2026-11-25T22:05:00+00:00", ["2026-11-25"]),  # the same instant with an offset
        (WALL, "2026-11-25T17:05:00-05:00", ["2026-11-25"]),
        # weekend and holidays: no session, so no window
        (WALL, "2026-11-28T17:05", []),  # Saturday
        (WALL, "2026-11-26T17:05", []),  # Thanksgiving
        (WALL, "2026-04-03T17:05", []),  # Good Friday
        (WALL, "2026-07-03T17:05", []),  # Independence Day observed
        (WALL, "2026-07-02T17:05", ["2026-07-02"]),
        # early close at 13:00 on the day after Thanksgiving: close+60m opens at 14:00
        (CLOSE_PLUS_60, "2026-11-27T13:59", []),
        (CLOSE_PLUS_60, "2026-11-27T14:00", ["2026-11-27"]),
        (CLOSE_PLUS_60, "2026-11-27T19:05:00+00:00", ["2026-11-27"]),
        (CLOSE_PLUS_60, "2026-11-27T17:05", []),
        (WALL, "2026-11-27T17:05", ["2026-11-27"]),  # a wall-time window ignores the early close
        (CLOSE_PLUS_60, "2026-11-25T17:05", ["2026-11-25"]),  # normal close 16:00
        (CLOSE_PLUS_60, "2026-12-24T14:10", ["2026-12-24"]),  # Christmas Eve early close
        # DST starts Sunday 2026-03-08: 17:00 New York is 22:00 UTC before, 21:00 UTC after
        (WALL, "2026-03-06T22:05:00+00:00", ["2026-03-06"]),
        (WALL, "2026-03-06T21:05:00+00:00", []),
        (WALL, "2026-03-09T21:05:00+00:00", ["2026-03-09"]),
        (WALL, "2026-03-09T22:05:00+00:00", []),
        (WALL, "2026-03-09T17:05", ["2026-03-09"]),
        (CLOSE_PLUS_60, "2026-03-09T21:05:00+00:00", ["2026-03-09"]),
        # DST ends Sunday 2026-11-01: 21:00 UTC before, 22:00 UTC after
        (WALL, "2026-10-30T21:05:00+00:00", ["2026-10-30"]),
        (WALL, "2026-11-02T21:05:00+00:00", []),
        (WALL, "2026-11-02T22:05:00+00:00", ["2026-11-02"]),
        (WALL, "2026-11-02T17:05", ["2026-11-02"]),
        (CLOSE_PLUS_60, "2026-11-02T22:05:00+00:00", ["2026-11-02"]),
    ],
)
def test_window_table(calendar, schedule, now, expected):
    assert due(calendar, schedule, now) == expected


def test_windows_of_early_close_and_dst(calendar):
    start = parse_window_start("close+60m")
    day_after_thanksgiving = calendar.window(dt.date(2026, 11, 27), start, 30)
    assert day_after_thanksgiving.start == dt.datetime(2026, 11, 27, 19, 0, tzinfo=dt.timezone.utc)
    summer = calendar.window(dt.date(2026, 7, 2), parse_window_start("17:00"), 30)
    assert summer.start.hour == 21 and summer.end.hour == 21 and summer.end.minute == 30


def test_calendar_end_is_exit_69_not_a_crash(calendar):
    far = parse_now("2040-01-02T17:05", calendar)
    with pytest.raises(CalendarExpiredError, match="upgrade exchange-calendars"):
        plan_cron(far, calendar, WALL, RunSettings(), TASKS, {})


def test_dates_outside_the_calendar_are_usage_errors(calendar):
    with pytest.raises(UsageError, match="outside the XNYS calendar"):
        calendar.is_session(dt.date(1990, 1, 2))


def test_cli_window_with_naive_and_offset_now(project):
    project.write_config('[schedule]\nauto_recover = false\n[[tasks]]\nname = "a"\ncommand = ["true"]\n')
    inside = project.cli("run", "--dry-run", "--now", "2026-03-09T17:05")
    assert "would run 2026-03-09" in inside.stdout
    same_instant = project.cli("run", "--dry-run", "--now", "2026-03-09T21:05:00Z")
    assert "would run 2026-03-09" in same_instant.stdout
    outside = project.cli("run", "--dry-run", "--now", "2026-03-09T22:05:00+00:00")
    assert "would run" not in outside.stdout
    via_env = project.cli("run", "--dry-run", TRADEUL_MAINT_NOW="2026-03-09T17:10")
    assert "would run 2026-03-09" in via_env.stdout


def test_cli_past_the_calendar_exits_69(project):
    project.write_config('[[tasks]]\nname = "a"\ncommand = ["true"]\n')
    result = project.cli("run", "--now", "2040-01-02T17:05")
    assert result.exit_code == 69
    assert "upgrade exchange-calendars" in result.stderr
    assert "Traceback" not in result.output
