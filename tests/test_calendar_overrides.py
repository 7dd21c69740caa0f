"""Calendar trust: operator overrides, the calendar's end, and the per-task catch-up policy."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from conftest import count_runs, marker_tasks
from tradeul_maint.config.settings import CalendarOverrides, RunSettings, ScheduleSettings, TaskSpec
from tradeul_maint.config.values import parse_window_start
from tradeul_maint.core.basis import parse_now
from tradeul_maint.plan.calendar import load_calendar
from tradeul_maint.plan.planner import plan_cron

TASKS = (TaskSpec(name="a", command=("true",)),)
CLOSE_PLUS_60 = ScheduleSettings(window_start=parse_window_start("close+60m"), auto_recover=False)


def calendar_with(cache, **overrides):
    return load_calendar("XNYS", CalendarOverrides(**overrides), cache)


def due(calendar, schedule, now_text):
    plan = plan_cron(parse_now(now_text, calendar), calendar, schedule, RunSettings(), TASKS, {})
    return [str(p.session) for p in plan.sessions]


def test_closure_override_removes_the_session(calendar_cache):
    plain = calendar_with(calendar_cache)
    closed = calendar_with(calendar_cache, closed=frozenset({dt.date(2026, 11, 25)}))
    assert due(plain, CLOSE_PLUS_60, "2026-11-25T17:05") == ["2026-11-25"]
    assert due(closed, CLOSE_PLUS_60, "2026-11-25T17:05") == []
    assert not closed.is_session(dt.date(2026, 11, 25))
    assert closed.sessions_up_to(dt.date(2026, 11, 27), 3) == [dt.date(2026, 11, 23), dt.date(2026, 11, 24),
                                                                dt.date(2026, 11, 27)]


def test_early_close_override_moves_a_close_relative_window(calendar_cache):
    early = calendar_with(calendar_cache, early_closes={dt.date(2026, 11, 25): dt.time(13, 0)})
    assert due(early, CLOSE_PLUS_60, "2026-11-25T14:05") == ["2026-11-25"]
    assert due(early, CLOSE_PLUS_60, "2026-11-25T17:05") == []
    assert early.override_note(dt.date(2026, 11, 25)) == "early close 13:00 by override"


def test_extra_session_gets_the_regular_hours_and_a_window(calendar_cache):
    extra = calendar_with(calendar_cache, sessions=frozenset({dt.date(2026, 11, 28)}))  # a Saturday
    assert extra.close(dt.date(2026, 11, 28)) == dt.datetime(2026, 11, 28, 21, 0, tzinfo=dt.timezone.utc)
    assert due(extra, CLOSE_PLUS_60, "2026-11-28T17:05") == ["2026-11-28"]


def test_expiry_warning_before_the_calendar_ends(calendar_cache):
    calendar = calendar_with(calendar_cache)
    last = calendar.library_last_session
    near = dt.datetime.combine(last - dt.timedelta(days=10), dt.time(12), calendar.tz)
    far = dt.datetime.combine(last - dt.timedelta(days=60), dt.time(12), calendar.tz)
    assert "upgrade exchange-calendars" in calendar.expiry_warning(near)
    assert calendar.expiry_warning(far) is None


def test_closure_override_applies_through_the_cli(project, r):
    project.write_config("[schedule]\nauto_recover = false\n[calendar]\nclosed = ['2026-11-25']\n"
                         + marker_tasks(project.root, ["a"]))
    cron = project.cli("run", "--now", "2026-11-25T17:05")
    assert cron.exit_code == 0 and cron.output == ""
    manual = project.cli("run", "--date", "2026-11-25")
    assert manual.exit_code == 2
    assert "2026-11-25 is not a trading session of XNYS (closed by override)" in manual.stderr
    assert r.keys("*") == []


@pytest.mark.parametrize("config, message", [
    ("[calendar]\nclosed = ['2026-11-25']\nsessions = ['2026-11-25']\n", "both closed and an extra session"),
    ("[calendar]\nsessions = ['someday']\n", "expected a date"),
])
def test_override_errors_are_configuration_errors(project, config, message):
    project.write_config(config + marker_tasks(project.root, ["a"]))
    result = project.cli("run", "--date", "2026-11-24")
    assert result.exit_code == 78 and message in result.stderr


def test_expiry_warning_is_logged_on_every_command_near_the_end(project, r, calendar_cache):
    project.write_config(marker_tasks(project.root, ["a"]))
    last = load_calendar("XNYS", CalendarOverrides(), calendar_cache).library_last_session
    now = f"{last - dt.timedelta(days=5)}T12:00"
    result = project.cli("run", "--now", now)
    assert result.exit_code == 0
    entries = [json.loads(line) for line in (project.log_dir / "maintenance.log").read_text().splitlines()]
    assert any(e["event"] == "calendar_expiring" and e["level"] == "WARNING" for e in entries)


def test_latest_tasks_run_once_across_a_multi_session_catch_up(project, r):
    project.write_config(marker_tasks(project.root, ["load"]) + "\n" +
                         marker_tasks(project.root, ["reset_cache"], extra='catchup = "latest"\n'))
    plan = project.cli("run", "--dry-run", "--now", "2026-11-25T17:05")
    assert "skip reset_cache: catchup = \"latest\"" in plan.stdout
    result = project.cli("run", "--now", "2026-11-25T17:05")
    assert result.exit_code == 0, result.output
    assert "2026-11-20: 1/2 tasks completed (1 left to the newest session: catchup = \"latest\")" in result.stdout
    sessions = ["2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20", "2026-11-23",
                "2026-11-24", "2026-11-25"]
    assert count_runs(project.root, "load") == sessions  # every session, oldest first
    assert count_runs(project.root, "reset_cache") == ["2026-11-25"]  # only the newest
    older = json.loads(r.get("maintenance:status:2026-11-20"))
    assert older["all_success"] is True and older["tasks"]["reset_cache"] == "skipped"
    assert "latest" in older["task_details"]["reset_cache"]["reason"]


def test_status_and_dry_run_say_when_an_override_changed_the_day(project, r):
    project.write_config("[schedule]\nwindow_start = 'close+60m'\n"
                         "[calendar]\nearly_closes = { 2026-11-24 = '13:00' }\nclosed = ['2026-11-23']\n"
                         + marker_tasks(project.root, ["a"]))
    dry = project.cli("run", "--dry-run", "--now", "2026-11-24T14:05")
    assert "would run 2026-11-24 (inside its window (14:00-14:30); early close 13:00 by override)" in dry.stdout
    status = project.cli("status", "--json", "--now", "2026-11-24T14:05")
    sessions = {s["date"]: s for s in json.loads(status.stdout)["sessions"]}
    assert sessions["2026-11-24"]["override"] == "early close 13:00 by override"
    assert "2026-11-23" not in sessions  # closed by override: not a session at all
    table = project.cli("status", "--now", "2026-11-24T14:05")
    assert "early close 13:00 by override" in table.stdout


def test_calendar_command_shows_reach_overrides_and_next_windows(project):
    project.write_config("[schedule]\nwindow_start = 'close+60m'\n[calendar]\nclosed = ['2026-11-30']\n"
                         + marker_tasks(project.root, ["a"]))
    result = project.cli("calendar", "--now", "2026-11-25T12:00", "--sessions", "3")
    assert result.exit_code == 0
    assert "XNYS (America/New_York), exchange-calendars" in result.stdout
    assert "closed 2026-11-30" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("2026-")]
    assert rows == [["2026-11-25", "16:00", "17:00-17:30", "22:00-22:30"],
                    ["2026-11-27", "13:00", "14:00-14:30", "19:00-19:30", *"early close 13:00 (Black Friday)".split()],
                    ["2026-12-01", "16:00", "17:00-17:30", "22:00-22:30"]]
    assert "next holidays: 2026-11-26 Thanksgiving, 2026-11-30 closed by override, 2026-12-25 Christmas" \
        in result.stdout
    info = json.loads(project.cli("calendar", "--json", "--now", "2026-11-25T12:00").stdout)
    assert [s["early_close"] for s in info["next_sessions"][:2]] == [None, "early close 13:00 (Black Friday)"]
    assert info["holidays"][:2] == [{"date": "2026-11-26", "name": "Thanksgiving"},
                                    {"date": "2026-11-30", "name": "closed by override"}]
    assert info["first_session"] < "2010-01-01" and info["last_session"] > "2027-01-01"
    assert info["warning"] is None


def test_status_check_reports_a_calendar_about_to_end(project, r, calendar_cache):
    project.write_config("[schedule]\nauto_recover = false\n" + marker_tasks(project.root, ["a"]))
    last = load_calendar("XNYS", CalendarOverrides(), calendar_cache).library_last_session
    day = last - dt.timedelta(days=8)
    while not load_calendar("XNYS", CalendarOverrides(), calendar_cache).is_session(day):
        day -= dt.timedelta(days=1)
    now = f"{day}T12:00"
    for previous in load_calendar("XNYS", CalendarOverrides(), calendar_cache).sessions_up_to(day, 8)[:-1]:
        assert project.cli("run", "--date", str(previous), "--now", now).exit_code == 0
    check = project.cli("status", "--check", "--now", now)
    assert check.exit_code == 1
    assert "NOT OK" in check.stdout and "upgrade exchange-calendars" in check.stdout
    fine = project.cli("status", "--check", "--now", f"{day - dt.timedelta(days=60)}T12:00")
    assert "upgrade exchange-calendars" not in fine.stdout
