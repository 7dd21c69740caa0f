"""`recover` and the auto-recovery inside cron `run`: which sessions are missed, in what order, and when not.

The week of 2026-11-23: Thanksgiving (Thursday 26th) is a holiday, Friday 27th an early
close. With the default lookback of 7 sessions, Monday 2026-11-30 looks back to
Thursday 2026-11-19. Window 17:00-17:30 New York.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from conftest import count_runs, marker_tasks
from tradeul_maint.config.settings import CalendarOverrides, RunSettings, ScheduleSettings, TaskSpec
from tradeul_maint.core import actions as core
from tradeul_maint.core.basis import parse_now
from tradeul_maint.plan.calendar import load_calendar
from tradeul_maint.plan.planner import plan_cron, plan_recover
from tradeul_maint.state.document import SessionStatus
from tradeul_maint.state.lock import RunLock

TASKS = (TaskSpec(name="a", command=("true",)),)
LOOKBACK = ["2026-11-19", "2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25", "2026-11-27", "2026-11-30"]
MONDAY_NOON = "2026-11-30T12:00"  # market open; Monday's window not passed yet
MONDAY_WINDOW = "2026-11-30T17:05"


@pytest.fixture(scope="module")
def calendar(calendar_cache):
    return load_calendar("XNYS", CalendarOverrides(), calendar_cache)


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def done(session: str) -> SessionStatus:
    at = dt.datetime.fromisoformat(f"{session}T22:10:00+00:00")
    return SessionStatus(day(session), started_at=at, completed_at=at, all_success=True, tasks={"a": "completed"},
                         attempts=1)


def failed(session: str, attempts: int, completed_at: str) -> SessionStatus:
    start = dt.datetime.fromisoformat(completed_at)
    return SessionStatus(day(session), started_at=start, completed_at=start, all_success=False,
                         tasks={"a": "failed"}, attempts=attempts)


def cron(calendar, now, statuses=None, schedule=ScheduleSettings(), run=RunSettings()):
    return plan_cron(parse_now(now, calendar), calendar, schedule, run, TASKS, statuses or {})


def planned(plan) -> list[str]:
    return [str(p.session) for p in plan.sessions]


# --- auto-recovery inside cron `run` (pure planner) ---------------------------------------------------


def test_cron_catches_up_missed_sessions_oldest_first_then_today(calendar):
    plan = cron(calendar, MONDAY_WINDOW)
    assert planned(plan) == LOOKBACK  # Thanksgiving and the weekend are not sessions, so never missing
    assert [p.recovery for p in plan.sessions] == [True] * 6 + [False]
    assert plan.sessions[-1].reason.startswith("inside its window")
    assert plan.sessions[0].reason == "catch-up: no maintenance recorded"


def test_cron_leaves_done_sessions_alone(calendar):
    statuses = {day(s): done(s) for s in LOOKBACK[:5]}
    assert planned(cron(calendar, MONDAY_WINDOW, statuses)) == ["2026-11-27", "2026-11-30"]


@pytest.mark.parametrize("now, missed", [
    ("2026-11-27T18:00", ["2026-11-18", "2026-11-19", "2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25",
                          "2026-11-27"]),  # the 7 sessions before include no Thanksgiving
    ("2026-11-28T10:00", ["2026-11-18", "2026-11-19", "2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25",
                          "2026-11-27"]),  # Saturday: no session today, the same 7
    ("2026-04-06T09:00", ["2026-03-26", "2026-03-27", "2026-03-30", "2026-03-31", "2026-04-01",
                          "2026-04-02"]),  # Good Friday 04-03 skipped; Monday 04-06 not yet due
    ("2026-12-28T09:00", ["2026-12-17", "2026-12-18", "2026-12-21", "2026-12-22", "2026-12-23",
                          "2026-12-24"]),  # Christmas Friday: the lookback counts sessions, not days
])
def test_catch_up_comes_from_the_calendar_not_weekdays(calendar, now, missed):
    assert planned(cron(calendar, now)) == missed


@pytest.mark.parametrize("now, recover_during_market_hours, expected", [
    ("2026-11-30T12:00", False, []),  # market open: wait
    ("2026-11-30T09:30", False, []),  # the open itself
    ("2026-11-30T15:59", False, []),
    ("2026-11-30T09:29", False, LOOKBACK[:-1]),  # before the open
    ("2026-11-30T16:00", False, LOOKBACK[:-1]),  # the close
    ("2026-11-30T12:00", True, LOOKBACK[:-1]),
    ("2026-11-27T12:30", False, []),  # early-close day, still open
    ("2026-11-27T13:30", False, LOOKBACK[:-2] + ["2026-11-18"]),  # closed at 13:00
])
def test_auto_recovery_waits_for_the_market_to_close(calendar, now, recover_during_market_hours, expected):
    plan = cron(calendar, now, schedule=ScheduleSettings(recover_during_market_hours=recover_during_market_hours))
    assert sorted(planned(plan)) == sorted(expected)
    if not expected:
        assert plan.deferred and all("waits for the market to close" in d.reason for d in plan.deferred)


def test_auto_recover_off_runs_only_todays_session(calendar):
    plan = cron(calendar, MONDAY_WINDOW, schedule=ScheduleSettings(auto_recover=False))
    assert planned(plan) == ["2026-11-30"]
    assert [str(d.session) for d in plan.deferred] == LOOKBACK[:-1]
    assert all("auto_recover is off" in d.reason for d in plan.deferred)


@pytest.mark.parametrize("attempts, last_failure, now, runs", [
    (1, "2026-11-30T23:00:00+00:00", "2026-11-30T23:04:59+00:00", False),  # backoff 5 min
    (1, "2026-11-30T23:00:00+00:00", "2026-11-30T23:05:00+00:00", True),
    (2, "2026-11-30T23:00:00+00:00", "2026-11-30T23:09:00+00:00", False),  # doubled: 10 min
    (2, "2026-11-30T23:00:00+00:00", "2026-11-30T23:10:00+00:00", True),
    (3, "2026-11-30T23:00:00+00:00", "2026-11-30T23:19:00+00:00", False),  # 20 min
    (3, "2026-11-30T23:00:00+00:00", "2026-11-30T23:20:00+00:00", True),
    (4, "2026-11-30T23:00:00+00:00", "2026-12-01T09:00:00+00:00", False),  # max_attempts = 4 reached
])
def test_auto_recovery_respects_backoff_and_max_attempts(calendar, attempts, last_failure, now, runs):
    statuses = {day(s): done(s) for s in LOOKBACK}
    statuses[day("2026-11-27")] = failed("2026-11-27", attempts, last_failure)
    plan = cron(calendar, now, statuses, run=RunSettings(max_attempts=4, retry_backoff_minutes=5))
    assert planned(plan) == (["2026-11-27"] if runs else [])
    if not runs:
        reason = plan.deferred[0].reason
        assert ("attempt 4 of 4: gave up" in reason) if attempts == 4 else (f"failed, attempt {attempts} of 4, next try after" in reason)


def test_plan_recover_orders_oldest_first_and_forces_only_when_asked(calendar):
    sessions = [day(s) for s in reversed(LOOKBACK[:-1])]
    statuses = {day("2026-11-20"): done("2026-11-20")}
    now = parse_now(MONDAY_WINDOW, calendar)
    plan = plan_recover(now, calendar, ScheduleSettings(), TASKS, sessions, statuses)
    assert planned(plan) == [s for s in LOOKBACK[:-1] if s != "2026-11-20"]
    assert [(str(d.session), d.reason) for d in plan.deferred] == [("2026-11-20", "done (use --force to run it again)")]
    assert planned(plan_recover(now, calendar, ScheduleSettings(), TASKS, sessions, statuses, force=True)) == LOOKBACK[:-1]


# --- `recover` on the command line ---------------------------------------------------------------------


def put(r, session: str, doc) -> None:
    r.set(f"maintenance:status:{session}", doc if isinstance(doc, str) else json.dumps(doc))


def done_doc(session: str) -> dict:
    return {"date": session, "started_at": f"{session}T22:00:00+00:00", "completed_at": f"{session}T22:01:00+00:00",
            "all_success": True, "tasks": {"a": "completed"}, "attempts": 1, "run_id": "earlier"}


def seed_every_kind(r) -> None:
    """19th done, 20th failed, 23rd interrupted, 24th corrupt, 25th missing, 27th done."""
    put(r, "2026-11-19", done_doc("2026-11-19"))
    put(r, "2026-11-20", {**done_doc("2026-11-20"), "all_success": False, "tasks": {"a": "failed"}})
    put(r, "2026-11-23", {**done_doc("2026-11-23"), "completed_at": None, "all_success": False,
                          "tasks": {"a": "in_progress"}, "run_id": "dead"})
    put(r, "2026-11-24", "{not json")
    put(r, "2026-11-27", done_doc("2026-11-27"))


def snapshot(r) -> dict:
    return {key: (r.type(key), r.dump(key)) for key in sorted(r.keys("*"))}


def test_recover_runs_failed_interrupted_corrupt_and_missing_oldest_first(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    seed_every_kind(r)
    untouched = {s: r.get(f"maintenance:status:{s}") for s in ("2026-11-19", "2026-11-27")}
    result = project.cli("recover", "--now", MONDAY_NOON)  # manual: market hours do not matter
    assert result.exit_code == 0, result.output
    assert count_runs(project.root, "a") == ["2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25"]
    for s in ("2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25"):
        assert json.loads(r.get(f"maintenance:status:{s}"))["all_success"] is True
        assert f"{s}: 1/1 tasks completed" in result.stdout
    assert {s: r.get(f"maintenance:status:{s}") for s in untouched} == untouched  # done ones left alone
    assert r.get("maintenance:status:2026-11-30") is None  # today's window has not passed: `run` does it
    log = [json.loads(line) for line in (project.log_dir / "maintenance.log").read_text().splitlines()]
    detected = [e for e in log if e["event"] == "missing_maintenance_days_detected"]
    assert detected and detected[0]["dates"] == ["2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25"]
    assert [e["date"] for e in log if e["event"] == "executing_recovery_maintenance"] == \
        ["2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25"]


def test_recover_dry_run_lists_every_session_with_its_reason_and_changes_nothing(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    seed_every_kind(r)
    before = snapshot(r)
    result = project.cli("recover", "--dry-run", "--now", MONDAY_NOON)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "leave 2026-11-19: done (use --force to run it again)",
        "would run 2026-11-20 (failed (a)): a",
        "would run 2026-11-23 (interrupted or still running): a",
        "would run 2026-11-24 (status document unreadable (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))): a",
        "would run 2026-11-25 (no maintenance recorded): a",
        "leave 2026-11-27: done (use --force to run it again)",
        "leave 2026-11-30: its window has not passed yet (`run` runs it)",
    ]
    assert snapshot(r) == before
    assert count_runs(project.root, "a", "started") == []


@pytest.mark.parametrize("args, expected", [
    (["--since", "2026-11-20", "--until", "2026-11-24"], ["2026-11-20", "2026-11-23", "2026-11-24"]),
    (["--since", "2026-11-26", "--until", "2026-11-27"], ["2026-11-27"]),  # a holiday as a bound
    (["--since", "2026-11-25"], ["2026-11-25", "2026-11-27"]),  # until today; today's window not passed
    (["--lookback", "3"], ["2026-11-25", "2026-11-27"]),  # 3 sessions: 25th, 27th and today
    (["--since", "2026-11-19", "--until", "2026-11-19", "--force"], ["2026-11-19"]),  # done, forced
])
def test_recover_range_is_exact(project, r, args, expected):
    project.write_config(marker_tasks(project.root, ["a"]))
    put(r, "2026-11-19", done_doc("2026-11-19"))
    result = project.cli("recover", *args, "--now", MONDAY_NOON)
    assert result.exit_code == 0, result.output
    assert count_runs(project.root, "a") == expected


def test_recover_backfills_sessions_older_than_the_lookback(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.cli("recover", "--since", "2026-10-30", "--until", "2026-11-03", "--now", MONDAY_NOON)
    assert result.exit_code == 0, result.output
    assert count_runs(project.root, "a") == ["2026-10-30", "2026-11-02", "2026-11-03"]


@pytest.mark.parametrize("args, message", [
    (["--since", "2026-13-01"], "--since '2026-13-01': expected a date YYYY-MM-DD"),
    (["--since", "2026-11-20", "--until", "yesterday"], "--until 'yesterday': expected a date YYYY-MM-DD"),
    (["--since", "2026-12-01"], "--since 2026-12-01 is in the future"),
    (["--since", "2026-11-20", "--until", "2026-12-01"], "--until 2026-12-01 is in the future"),
    (["--since", "1800-01-02"], "1800-01-02 is outside the XNYS calendar"),
    (["--until", "2026-11-20"], "--until needs --since"),
    (["--since", "2026-11-24", "--until", "2026-11-20"], "--since 2026-11-24 is after --until 2026-11-20"),
    (["--since", "2026-11-26", "--until", "2026-11-26"], "no XNYS trading session from 2026-11-26 to 2026-11-26 "
                                                          "(2026-11-26 Thanksgiving); the next session is 2026-11-27"),
    (["--lookback", "3", "--since", "2026-11-20"], "--lookback and --since/--until exclude each other"),
    (["--lookback", "400"], "--lookback 400 can span"),
    (["--lookback", "0"], "--lookback"),
])
def test_recover_bad_dates_exit_2_with_one_line(project, r, args, message):
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.cli("recover", *args, "--now", MONDAY_NOON)
    assert result.exit_code == 2
    if args != ["--lookback", "0"]:  # click's own usage message is a box of several lines
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert count_runs(project.root, "a", "started") == [] and r.keys("maintenance:*") == []


def test_recover_exits_75_naming_the_lock_holder(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    r.set("maintenance:lock", json.dumps({"host": "cron-7", "pid": 4242, "since": "2026-11-30T16:00:00+00:00",
                                          "run_id": "other", "nonce": "x"}), px=60000)
    result = project.cli("recover", "--now", MONDAY_NOON)
    assert result.exit_code == 75
    assert "another runner holds the lock (host cron-7, pid 4242" in result.stderr
    assert count_runs(project.root, "a", "started") == []


def test_recover_exits_1_when_a_recovered_session_still_fails(project, r):
    project.write_config(marker_tasks(project.root, ["a", "b"], fail=("b",)))
    result = project.cli("recover", "--lookback", "3", "--now", MONDAY_NOON)
    assert result.exit_code == 1
    assert "2026-11-25: 1/2 tasks completed" in result.stderr and "b failed" in result.stderr
    assert count_runs(project.root, "a") == ["2026-11-25", "2026-11-27"]  # one failure does not stop the others


def test_recover_with_nothing_to_do_says_so(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    for s in ("2026-11-25", "2026-11-27"):
        put(r, s, done_doc(s))
    result = project.cli("recover", "--lookback", "3", "--now", MONDAY_NOON)
    assert result.exit_code == 0 and result.stdout.startswith("nothing to recover")
    assert count_runs(project.root, "a", "started") == []


def test_recover_plans_again_under_the_lock(project, r, monkeypatch):
    """A runner that finished a session between our first read and our lock must not be repeated."""
    project.write_config(marker_tasks(project.root, ["a"]))
    acquire = RunLock.acquire

    def finish_first(lock):
        put(r, "2026-11-25", done_doc("2026-11-25"))  # another runner completes it just before we lock
        acquire(lock)

    monkeypatch.setattr(RunLock, "acquire", finish_first)
    result = project.cli("recover", "--lookback", "3", "--now", MONDAY_NOON)
    assert result.exit_code == 0, result.output
    assert count_runs(project.root, "a") == ["2026-11-27"]


# --- auto-recovery end to end -------------------------------------------------------------------------


def test_cron_run_catches_up_before_today_and_not_during_market_hours(project, r):
    project.write_config("[schedule]\nlookback_sessions = 3\n" + marker_tasks(project.root, ["a"]))
    quiet = project.cli("run", "--now", MONDAY_NOON)
    assert quiet.exit_code == 0 and quiet.output == ""  # market open: silent, nothing run
    assert count_runs(project.root, "a", "started") == []
    result = project.cli("run", "--now", MONDAY_WINDOW)
    assert result.exit_code == 0, result.output
    assert count_runs(project.root, "a") == ["2026-11-25", "2026-11-27", "2026-11-30"]
    log = [json.loads(line) for line in (project.log_dir / "maintenance.log").read_text().splitlines()]
    assert [e["dates"] for e in log if e["event"] == "missing_maintenance_days_detected"] == \
        [["2026-11-25", "2026-11-27"]]  # today's session is not a missed one


def test_core_recover_shares_the_locked_execution_path(project, r, monkeypatch):
    project.write_config("[schedule]\nlookback_sessions = 2\n" + marker_tasks(project.root, ["a"]))
    calls = []
    execute = core._execute
    monkeypatch.setattr(core, "_execute", lambda *a, **k: calls.append(a) or execute(*a, **k))
    assert project.cli("recover", "--now", MONDAY_NOON).exit_code == 0
    assert project.cli("run", "--now", MONDAY_WINDOW).exit_code == 0
    assert len(calls) == 2
