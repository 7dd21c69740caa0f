"""`status`: the state of each session in the lookback, one session task by task, JSON, and `--check`.

Monday 2026-11-30 looks back over 2026-11-19 .. 2026-11-30 (7 sessions; Thanksgiving and the
weekend are not sessions). Window 17:00-17:30 New York.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from conftest import marker_tasks
from tradeul_maint.calendar import Window
from tradeul_maint.lock import LockHolder
from tradeul_maint.overview import classify
from tradeul_maint.state import SessionStatus

IN_WINDOW = "2026-11-30T17:10"
NOON = "2026-11-30T12:00"
AFTER = "2026-11-30T18:00"
LOOKBACK = ["2026-11-30", "2026-11-27", "2026-11-25", "2026-11-24", "2026-11-23", "2026-11-20", "2026-11-19"]
LEGACY = {"date": "2026-11-19", "started_at": "2026-11-19T17:00:01.123456",
          "completed_at": "2026-11-19T17:18:40.654321", "all_success": True,
          "tasks": {"load_ohlc": "completed", "calculate_atr": "completed"}}


def put(r, session: str, doc) -> None:
    r.set(f"maintenance:status:{session}", doc if isinstance(doc, str) else json.dumps(doc))


def doc(session: str, **changes) -> dict:
    base = {"date": session, "started_at": f"{session}T22:00:00.000+00:00",
            "completed_at": f"{session}T22:02:05.000+00:00", "duration_seconds": 125.0, "all_success": True,
            "tasks": {"a": "completed", "b": "completed"}, "attempts": 1, "run_id": f"run-{session[-2:]}"}
    return {**base, **changes}


def hold_lock(r, run_id: str) -> None:
    r.set("maintenance:lock", json.dumps({"host": "worker-1", "pid": 321, "since": "2026-11-30T22:05:00+00:00",
                                          "run_id": run_id, "nonce": "n"}), px=60000)


def seed(project, r) -> None:
    """19th legacy done, 20th done, 23rd failed (a real run), 24th interrupted, 25th corrupt, 27th missing,
    30th running (its run holds the lock)."""
    project.write_config(marker_tasks(project.root, ["a", "b"], fail=("b",)))
    assert project.cli("run", "--date", "2026-11-23", "--now", AFTER).exit_code == 1
    put(r, "2026-11-19", LEGACY)
    put(r, "2026-11-20", doc("2026-11-20"))
    put(r, "2026-11-24", doc("2026-11-24", completed_at=None, all_success=False, run_id="dead",
                             tasks={"a": "completed", "b": "in_progress"}))
    put(r, "2026-11-25", "{not json")
    put(r, "2026-11-30", doc("2026-11-30", started_at="2026-11-30T22:01:00+00:00", completed_at=None,
                             all_success=False, run_id="live", tasks={"a": "in_progress", "b": "pending"}))
    hold_lock(r, "live")


EXPECTED = {"2026-11-30": "running", "2026-11-27": "missing", "2026-11-25": "corrupt",
            "2026-11-24": "interrupted", "2026-11-23": "failed", "2026-11-20": "done", "2026-11-19": "done"}


def table_rows(output: str, first_column: str) -> dict[str, str]:
    """The rows of the table whose header starts with `first_column`, by their first cell (up to a blank line)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first_column])
    body = lines[start + 1:]
    return {line.split()[0]: line for line in body[:body.index("")] if line.strip()}


def rows(output: str) -> dict[str, str]:
    """session -> its table row."""
    return {line[:10]: line for line in output.splitlines() if line[:4] == "2026" and line[10:11] == " "}


def test_status_table_shows_the_state_of_each_kind_of_session(project, r):
    seed(project, r)
    result = project.cli("status", "--now", IN_WINDOW)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Last 7 XNYS sessions, newest first (times in America/New_York)"
    assert lines[1].split() == ["session", "state", "tasks", "attempts", "started", "duration", "note"]
    table = rows(result.stdout)
    assert list(table) == LOOKBACK
    for session, state in EXPECTED.items():
        assert table[session].split()[1] == state, table[session]
    assert table["2026-11-20"].split()[1:7] == ["done", "2/2", "1", "2026-11-20", "17:00", "2m05s"]
    assert table["2026-11-23"].split()[1:3] == ["failed", "1/2"] and "b not completed" in table["2026-11-23"]
    assert table["2026-11-27"].split()[1:4] == ["missing", "0/2", "-"]
    assert "runner stopped before the end" in table["2026-11-24"]
    assert "window open now (session 2026-11-30): 2026-11-30 17:00 to 2026-11-30 17:30 America/New_York, " \
           "2026-11-30 22:00 to 2026-11-30 22:30 UTC" in result.stdout
    assert "lock: held by host worker-1, pid 321, since 2026-11-30T22:05:00+00:00, run live" in result.stdout
    assert "\x1b[" not in result.stdout  # not a terminal: no colour
    assert all(line == line.rstrip() for line in lines)


def test_status_json_carries_the_same_information(project, r):
    seed(project, r)
    result = project.cli("status", "--json", "--now", IN_WINDOW)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"now", "calendar", "timezone", "order", "lookback", "ok", "not_done", "sessions",
                         "next_window", "lock", "last_run", "calendar_warning", "config", "redis", "log_dir",
                         "log_dir_fallback", "slow_tasks", "window_risk", "warnings", "containment", "job", "jobs"}
    assert data["order"] == "newest_first" and data["lookback"] == 7 and data["timezone"] == "America/New_York"
    assert {s["date"]: s["state"] for s in data["sessions"]} == EXPECTED
    assert [s["date"] for s in data["sessions"]] == LOOKBACK
    assert data["ok"] is False
    assert data["not_done"] == ["2026-11-27", "2026-11-25", "2026-11-24", "2026-11-23"]  # today's window is open
    assert data["next_window"] == {"session": "2026-11-30", "start": "2026-11-30T22:00:00.000+00:00",
                                   "end": "2026-11-30T22:30:00.000+00:00", "start_local": "2026-11-30T17:00-05:00",
                                   "end_local": "2026-11-30T17:30-05:00", "open": True}
    assert data["lock"] == {"host": "worker-1", "pid": 321, "since": "2026-11-30T22:05:00+00:00", "run_id": "live",
                            "foreign": None}
    assert data["last_run"] == "2026-11-23"
    keys = {"date", "state", "window_start", "window_end", "window_passed", "tasks_completed", "tasks_total",
            "attempts", "started_at", "completed_at", "duration_seconds", "run_id", "note", "override", "deadline",
            "done_at", "late_seconds", "task_list_differences"}
    failed = next(s for s in data["sessions"] if s["date"] == "2026-11-23")
    assert set(failed) == keys  # the lookback view leaves the tasks to `--date`
    assert (failed["tasks_completed"], failed["tasks_total"], failed["attempts"]) == (1, 2, 1)
    one = json.loads(project.cli("status", "--json", "--date", "2026-11-23", "--now", IN_WINDOW).stdout)
    assert [s["date"] for s in one["sessions"]] == ["2026-11-23"]
    assert set(one["sessions"][0]) == keys | {"tasks", "timeline", "cycles"}
    b = one["sessions"][0]["tasks"][1]
    assert b["name"] == "b" and b["status"] == "failed" and b["attempts"] == 1
    assert "exit code 3" in b["error"] and "something went wrong in b" in b["error"]


def test_status_date_shows_one_session_task_by_task_with_errors(project, r):
    seed(project, r)
    result = project.cli("status", "--date", "2026-11-23", "--now", IN_WINDOW)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("2026-11-23: failed, 1/2 tasks completed, 1 cycle, times in America/New_York")
    task_rows = table_rows(out, "task")
    assert task_rows["a"].split()[1:3] == ["completed", "1"]
    assert task_rows["b"].split()[1:3] == ["failed", "1"]
    assert "failed with exit code 3" in task_rows["b"]
    assert "something went wrong in b" in out  # the last lines of its output


@pytest.mark.parametrize("holder, state", [(None, "interrupted"), ("dead", "running"), ("other", "interrupted")])
def test_unfinished_session_is_running_only_while_its_run_holds_the_lock(project, r, holder, state):
    project.write_config(marker_tasks(project.root, ["a", "b"]))
    put(r, "2026-11-27", doc("2026-11-27", completed_at=None, all_success=False, run_id="dead",
                             tasks={"a": "in_progress", "b": "pending"}))
    if holder:
        hold_lock(r, holder)
    data = json.loads(project.cli("status", "--json", "--now", NOON).stdout)
    assert data["sessions"][1]["date"] == "2026-11-27" and data["sessions"][1]["state"] == state


@pytest.mark.parametrize("now, states", [
    # Before today's window opens, the session whose window opened last stays in view, even with --lookback 1.
    ("2026-11-30T12:00", [("2026-11-30", "not_yet_due"), ("2026-11-27", "missing")]),
    ("2026-11-30T17:00", [("2026-11-30", "due")]), ("2026-11-30T17:29", [("2026-11-30", "due")]),
    ("2026-11-30T17:30", [("2026-11-30", "missing")]),
])
def test_session_without_a_document_is_due_only_from_its_window(project, r, now, states):
    project.write_config(marker_tasks(project.root, ["a"]))
    data = json.loads(project.cli("status", "--json", "--lookback", "1", "--now", now).stdout)
    assert [(s["date"], s["state"]) for s in data["sessions"]] == states


def test_legacy_document_of_the_replaced_service_shows_as_done(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    put(r, "2026-11-19", LEGACY)
    table = rows(project.cli("status", "--now", NOON).stdout)
    assert table["2026-11-19"].split()[1:3] == ["done", "2/2"]
    assert table["2026-11-19"].split()[6] == "18m40s"  # no duration_seconds: taken from its timestamps
    data = json.loads(project.cli("status", "--json", "--date", "2026-11-19", "--now", NOON).stdout)
    session = data["sessions"][0]
    assert session["state"] == "done" and session["attempts"] == 1
    assert [t["status"] for t in session["tasks"]] == ["completed", "completed"]
    assert data["ok"] is True


@pytest.mark.parametrize("docs, lock, exit_code, line", [
    ({s: "done" for s in LOOKBACK[1:]}, None, 0,
     "OK: all 6 XNYS sessions whose window has passed are done"),
    ({**{s: "done" for s in LOOKBACK[1:]}, "2026-11-25": None}, None, 1,
     "NOT OK: 1 of 6 sessions whose window has passed are not done: 2026-11-25 missing"),
    ({**{s: "done" for s in LOOKBACK[1:]}, "2026-11-19": "failed", "2026-11-24": "corrupt"}, None, 1,
     "NOT OK: 2 of 6 sessions whose window has passed are not done: 2026-11-19 failed, 2026-11-24 corrupt"),
    ({**{s: "done" for s in LOOKBACK[1:]}, "2026-11-27": "unfinished"}, "run-27", 1,
     "NOT OK: 1 of 6 sessions whose window has passed are not done: 2026-11-27 running"),
])
def test_check_exits_1_when_a_session_whose_window_has_passed_is_not_done(project, r, docs, lock, exit_code, line):
    project.write_config(marker_tasks(project.root, ["a", "b"]))
    for session, kind in docs.items():
        if kind == "done":
            put(r, session, doc(session))
        elif kind == "failed":
            put(r, session, doc(session, all_success=False, tasks={"a": "completed", "b": "failed"}))
        elif kind == "corrupt":
            put(r, session, "[]")
        elif kind == "unfinished":
            put(r, session, doc(session, completed_at=None, all_success=False))
    if lock:
        hold_lock(r, lock)
    result = project.cli("status", "--check", "--now", NOON)  # today's window has not passed: not counted
    assert result.exit_code == exit_code
    assert result.stdout == line + "\n"


def test_check_counts_today_once_its_window_has_passed(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    for session in LOOKBACK[1:]:
        put(r, session, doc(session))
    assert project.cli("status", "--check", "--now", IN_WINDOW).exit_code == 0
    late = project.cli("status", "--check", "--now", AFTER)
    assert late.exit_code == 1 and "2026-11-30 missing" in late.stdout
    as_json = project.cli("status", "--check", "--json", "--now", AFTER)
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["not_done"] == ["2026-11-30"]


@pytest.mark.parametrize("args, message", [
    (["--date", "2026-11-26"], "2026-11-26 is not a trading session of XNYS (Thanksgiving)"),
    (["--date", "2026-11-28"], "2026-11-28 is not a trading session of XNYS (a Saturday); the next session is "
                               "2026-11-30 (Monday)"),
    (["--date", "2026-12-01"], "2026-12-01 is in the future"),
    (["--date", "30/11/2026"], "--date '30/11/2026': expected a date YYYY-MM-DD"),
    (["--lookback", "400"], "--lookback 400 can span"),
    (["--lookback", "3", "--date", "2026-11-27"], "--date and --lookback exclude each other"),
])
def test_status_bad_usage_exits_2_with_one_line(project, r, args, message):
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.cli("status", *args, "--now", NOON)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def command_calls(r) -> dict[str, int]:
    stats = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["recover", "--dry-run"]])
def test_every_lookback_session_is_read_with_one_command(project, r, command):
    project.write_config("[redis]\nstatus_ttl_days = 120\n" + marker_tasks(project.root, ["a"]))
    counts = []
    for lookback in ("3", "60"):
        r.config_resetstat()
        assert project.cli(*command, "--lookback", lookback, "--now", NOON).exit_code == 0
        calls = command_calls(r)
        calls.pop("config", None)
        counts.append(calls)
    assert counts[0] == counts[1]  # 60 sessions cost no more commands than 3
    assert counts[1]["mget"] == 1


@pytest.mark.parametrize("status, now, holder, state", [
    (None, "2026-11-30T21:59:59+00:00", None, "not_yet_due"),
    (None, "2026-11-30T22:00:00+00:00", None, "due"),
    (None, "2026-11-30T22:30:00+00:00", None, "missing"),
    (SessionStatus(dt.date(2026, 11, 30), corrupt="bad"), "2026-11-30T23:00:00+00:00", None, "corrupt"),
    (SessionStatus(dt.date(2026, 11, 30), started_at=dt.datetime(2026, 11, 30, 22, tzinfo=dt.timezone.utc),
                   run_id="x"), "2026-11-30T22:10:00+00:00", LockHolder("h", 1, "s", ""), "running"),
    (SessionStatus(dt.date(2026, 11, 30), started_at=dt.datetime(2026, 11, 30, 22, tzinfo=dt.timezone.utc),
                   completed_at=dt.datetime(2026, 11, 30, 22, 5, tzinfo=dt.timezone.utc)),
     "2026-11-30T22:10:00+00:00", LockHolder("h", 1, "s", "x"), "failed"),
])
def test_classify_table(status, now, holder, state):
    window = Window(dt.date(2026, 11, 30), dt.datetime(2026, 11, 30, 22, tzinfo=dt.timezone.utc),
                    dt.datetime(2026, 11, 30, 22, 30, tzinfo=dt.timezone.utc))
    assert classify(status, window, dt.datetime.fromisoformat(now), holder) == state


# --- which configuration, which Redis, which log directory ------------------------------------------------


def test_status_and_calendar_say_which_config_and_redis_they_use_password_hidden(project, tmp_path):
    from conftest import start_redis

    project.write_config(marker_tasks(project.root, ["a"]))
    proc, url = start_redis(tmp_path, "--requirepass", "s3cret", tcp=True)
    try:
        secret_url = url.replace("redis://", "redis://:s3cret@")
        shown = url.replace("redis://", "redis://:***@")
        status = project.cli("status", "--now", NOON, "--redis-url", secret_url)
        assert status.exit_code == 0, status.output
        assert f"config: {project.config}; redis: {shown}" in status.stdout.splitlines()
        assert f"log: {project.log_dir}" in status.stdout.splitlines()
        data = json.loads(project.cli("status", "--json", "--now", NOON, "--redis-url", secret_url).stdout)
        assert (data["config"], data["redis"], data["log_dir"], data["log_dir_fallback"]) == \
            (str(project.config), shown, str(project.log_dir), None)
        calendar = project.cli("calendar", "--now", NOON, "--redis-url", secret_url)
        assert calendar.exit_code == 0 and f"config: {project.config}; redis: {shown}" in calendar.stdout
        info = json.loads(project.cli("calendar", "--json", "--now", NOON, "--redis-url", secret_url).stdout)
        assert (info["config"], info["redis"]) == (str(project.config), shown)
        for result in (status, calendar):
            assert "s3cret" not in result.output and result.stderr == ""
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_embedded_redis_without_a_config_file_is_a_warning(project):
    embedded = {"TRADEUL_MAINT_CONFIG": "", "TRADEUL_MAINT_REDIS_URL": ""}
    warning = (f"tradeul-maint: warning: no config file found (looked for {project.root / 'tradeul-maint.toml'}, "
               f"/etc/tradeul/maint.toml) and no Redis URL given: this is the embedded Redis in "
               f"{project.state_dir / 'redis'}, not a shared one; give --config or --redis-url")
    for command in (["status"], ["status", "--json"], ["calendar"]):
        result = project.cli(*command, "--now", NOON, **embedded)
        assert result.exit_code == 0, result.output
        assert result.stderr.strip() == warning
    table = project.cli("status", "--now", NOON, **embedded).stdout
    assert f"config: none found; redis: embedded Redis in {project.state_dir / 'redis'}" in table
    assert json.loads(project.cli("status", "--json", "--now", NOON, **embedded).stdout)["config"] is None
    project.write_config(marker_tasks(project.root, ["a"]))  # with a config file the embedded Redis is a choice
    quiet = project.cli("status", "--now", NOON, TRADEUL_MAINT_REDIS_URL="")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_status_says_when_the_log_directory_falls_back(project):
    project.write_config(marker_tasks(project.root, ["a"]))
    (project.root / "blocker").write_text("")
    wanted = project.root / "blocker" / "logs"
    result = project.cli("status", "--now", NOON, TRADEUL_MAINT_LOG_DIR=str(wanted))
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("log: "))
    assert line.startswith(f"log: {project.state_dir / 'logs'}, falling back: {wanted} is not writable (")
    data = json.loads(project.cli("status", "--json", "--now", NOON, TRADEUL_MAINT_LOG_DIR=str(wanted)).stdout)
    assert data["log_dir"] == str(project.state_dir / "logs")
    assert data["log_dir_fallback"]["preferred"] == str(wanted) and data["log_dir_fallback"]["reason"]


def test_a_run_that_did_work_says_once_that_its_log_fell_back_and_a_silent_tick_says_nothing(project):
    project.write_config(marker_tasks(project.root, ["a"]))
    (project.root / "blocker").write_text("")
    env = {"TRADEUL_MAINT_LOG_DIR": str(project.root / "blocker" / "logs")}
    worked = project.cli("run", "--date", "2026-11-27", "--now", NOON, **env)
    assert worked.exit_code == 0 and "2026-11-27: 1/1 tasks completed" in worked.stdout
    assert worked.stderr.count("log_dir_fallback") == 1
    assert worked.stderr.startswith(f"WARNING log_dir_fallback: {env['TRADEUL_MAINT_LOG_DIR']} is not writable")
    again = project.cli("run", "--date", "2026-11-27", "--now", NOON, **env)  # already done: no work
    assert again.exit_code == 0 and again.stderr == ""
    quiet = project.cli("-q", "run", "--date", "2026-11-27", "--force", "--now", NOON, **env)
    assert quiet.exit_code == 0 and quiet.stderr == ""  # -q: errors only
    recovered = project.cli("recover", "--now", NOON, **env)  # the other sessions of the lookback
    assert recovered.exit_code == 0 and recovered.stderr.count("log_dir_fallback") == 1


# --- trends: one task across sessions, tasks slower than usual, the window at risk --------------------------


def timed_doc(session: str, durations: dict[str, float], states: dict[str, str] | None = None,
              after: dict[str, str] | None = None) -> dict:
    """A finished session whose tasks ran one after the other from 22:00 UTC (or after the task named in `after`)."""
    start = dt.datetime.fromisoformat(f"{session}T22:00:00+00:00")
    ends: dict[str, dt.datetime] = {}
    details, clock = {}, start
    for name, seconds in durations.items():
        begin = ends[after[name]] if after and name in after else clock
        ends[name] = begin + dt.timedelta(seconds=seconds)
        clock = max(clock, ends[name])
        details[name] = {"started_at": begin.isoformat(), "finished_at": ends[name].isoformat(),
                         "duration_seconds": seconds, "attempts": 1}
    states = {name: "completed" for name in durations} | (states or {})
    return doc(session, tasks=states, task_details=details, all_success=all(v == "completed" for v in states.values()),
               completed_at=clock.isoformat(), duration_seconds=(clock - start).total_seconds())


ATR = [12.0, 11.0, 13.0, 12.5, 11.5, 12.0, 40.0]  # oldest first over LOOKBACK; the latest (11-30) is slow


def seed_durations(project, r, latest: float = 40.0, extra: str = "") -> None:
    project.write_config(extra + marker_tasks(project.root, ["load", "atr"], deps={"atr": ["load"]}))
    for session, atr in zip(reversed(LOOKBACK), ATR[:-1] + [latest]):
        put(r, session, timed_doc(session, {"load": 5.0, "atr": atr}))


def test_status_task_shows_one_task_across_the_lookback_with_a_sparkline_and_its_median(project, r):
    seed_durations(project, r)
    put(r, "2026-11-24", timed_doc("2026-11-24", {"load": 5.0, "atr": 3.0}, states={"atr": "failed"}))
    result = project.cli("status", "--task", "atr", "--now", AFTER)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("atr over 7 XNYS sessions, newest first (times in America/New_York)")
    table = table_rows(out, "session")
    assert list(table) == LOOKBACK
    assert table["2026-11-30"].split()[1:] == ["completed", "1", "2026-11-30", "17:00", "40.0s", "3.33x"]
    assert table["2026-11-24"].split()[1:3] == ["failed", "1"] and table["2026-11-24"].split()[-1] == "-"
    spark = next(line for line in out.splitlines() if line.startswith("durations, oldest to newest: "))
    bars = spark.removeprefix("durations, oldest to newest: ")
    assert len(bars) == 7 and bars[3] == "·" and bars[-1] == "█"  # the failed run has no duration
    assert len(set(bars[:3] + bars[4:6])) <= 2 and bars[0] < "█"  # the usual runs stand well below the latest
    # the median of 12, 11, 13, 11.5, 12, 40 is 12; the latest is 40/12 = 3.33 times it
    assert "median 12.0s over 6 completed runs; latest 40.0s (2026-11-30) = 3.33x the median" in out
    assert "slower than usual: more than slow_factor = 2 times the median" in out

    data = json.loads(project.cli("status", "--task", "atr", "--json", "--now", AFTER).stdout)
    assert (data["task"], data["order"], data["median_seconds"], data["latest"], data["latest_seconds"],
            data["ratio"], data["slow"], data["slow_factor"]) == \
        ("atr", "oldest_first", 12.0, "2026-11-30", 40.0, 3.33, True, 2.0)
    assert [(s["date"], s["status"], s["duration_seconds"]) for s in data["sessions"]] == \
        [(d, "failed" if d == "2026-11-24" else "completed", 3.0 if d == "2026-11-24" else a)
         for d, a in zip(reversed(LOOKBACK), ATR)]


def test_status_task_over_an_explicit_range_and_unknown_tasks(project, r):
    seed_durations(project, r)
    data = json.loads(project.cli("status", "--task", "load", "--since", "2026-11-20", "--until", "2026-11-25",
                                  "--json", "--now", AFTER).stdout)
    assert [s["date"] for s in data["sessions"]] == ["2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25"]
    assert data["median_seconds"] == 5.0 and data["slow"] is False
    ranged = project.cli("status", "--since", "2026-11-20", "--until", "2026-11-25", "--now", AFTER).stdout
    assert ranged.splitlines()[0] == "XNYS sessions 2026-11-20 to 2026-11-25, newest first (times in America/New_York)"
    assert list(rows(ranged)) == ["2026-11-25", "2026-11-24", "2026-11-23", "2026-11-20"]
    unknown = project.cli("status", "--task", "nope", "--now", AFTER)
    assert unknown.exit_code == 2
    assert unknown.stderr.strip() == "tradeul-maint: unknown task 'nope': tasks configured or recorded are load, atr"
    both = project.cli("status", "--task", "load", "--date", "2026-11-27", "--now", AFTER)
    assert both.exit_code == 2 and "--task and --date exclude each other" in both.stderr


def test_status_table_marks_a_task_slower_than_slow_factor_times_its_median(project, r):
    seed_durations(project, r)
    table = rows(project.cli("status", "--now", AFTER).stdout)
    assert table["2026-11-30"].endswith("slower than usual: atr took 3.33x its median (40.0s against 12.0s)")
    assert "slower" not in "".join(line for day, line in table.items() if day != "2026-11-30")
    data = json.loads(project.cli("status", "--json", "--now", AFTER).stdout)
    assert [(t["task"], t["latest"], t["ratio"], t["median_seconds"]) for t in data["slow_tasks"]] == \
        [("atr", "2026-11-30", 3.33, 12.0)]

    seed_durations(project, r, extra="[run]\nslow_factor = 4.0\n")  # 3.33x is usual enough now
    assert "slower" not in project.cli("status", "--now", AFTER).stdout
    seed_durations(project, r, latest=20.0)  # 1.67x: not slow
    assert json.loads(project.cli("status", "--json", "--now", AFTER).stdout)["slow_tasks"] == []


def test_status_date_draws_the_session_as_a_timeline(project, r):
    project.write_config(marker_tasks(project.root, ["load", "volume", "atr"], deps={"atr": ["load"]}))
    put(r, "2026-11-27", timed_doc("2026-11-27", {"load": 60.0, "volume": 30.0, "atr": 120.0},
                                   after={"volume": "load", "atr": "load"}))
    result = project.cli("status", "--date", "2026-11-27", "--now", AFTER)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("timeline: "))
    assert lines[head].startswith("timeline: 17:00:00 to 17:03:00 America/New_York, 3m00s")
    bars = {line.split()[0]: line.split(" ", 1)[1].strip() for line in lines[head + 1:head + 4]}
    assert set(bars) == {"load", "volume", "atr"}
    span = {name: (bar.index("█"), bar.rindex("█")) for name, bar in bars.items()}
    # load takes the first third of the axis; volume and atr start where it ends; atr, twice as long, runs to the end
    assert span["load"][0] == 1 and span["volume"][0] == span["atr"][0] == span["load"][1] + 1
    assert span["atr"][1] == len(bars["atr"]) - 2 > span["volume"][1]
    assert abs((span["load"][1] - span["load"][0] + 1) * 2 - (span["atr"][1] - span["atr"][0] + 1)) <= 2
    assert lines[head + 4].split() == ["17:00:00", "+1m30s", "+3m00s"]

    data = json.loads(project.cli("status", "--date", "2026-11-27", "--json", "--now", AFTER).stdout)
    session = data["sessions"][0]
    assert session["timeline"] == {"start": "2026-11-27T22:00:00.000+00:00", "end": "2026-11-27T22:03:00.000+00:00",
                                   "seconds": 180.0}
    assert {t["name"]: t["bar"] for t in session["tasks"]} == {
        "load": {"start_seconds": 0.0, "end_seconds": 60.0, "open": False},
        "volume": {"start_seconds": 60.0, "end_seconds": 90.0, "open": False},
        "atr": {"start_seconds": 60.0, "end_seconds": 180.0, "open": False}}


def test_a_running_task_is_drawn_up_to_now(project, r):
    project.write_config(marker_tasks(project.root, ["a", "b"]))
    put(r, "2026-11-30", doc("2026-11-30", completed_at=None, all_success=False, run_id="live",
                             tasks={"a": "completed", "b": "in_progress"},
                             task_details={"a": {"started_at": "2026-11-30T22:00:00+00:00",
                                                 "finished_at": "2026-11-30T22:01:00+00:00",
                                                 "duration_seconds": 60.0},
                                           "b": {"started_at": "2026-11-30T22:01:00+00:00"}}))
    hold_lock(r, "live")
    data = json.loads(project.cli("status", "--date", "2026-11-30", "--json", "--now", "2026-11-30T17:04").stdout)
    assert {t["name"]: t["bar"] for t in data["sessions"][0]["tasks"]}["b"] == \
        {"start_seconds": 60.0, "end_seconds": 240.0, "open": True}


@pytest.mark.parametrize("extra, max_parallel, at_risk", [
    ("", 2, False),  # critical path load + atr = 5 + 40 min: under 2 x 30 min
    ("", 1, True),  # one worker: every task in turn, 5 + 40 + 20 = 65 min
    ("deadline_minutes = 40\n", 2, True),
])
def test_status_warns_when_the_median_durations_would_run_past_the_deadline(project, r, extra, max_parallel,
                                                                               at_risk):
    project.write_config(f"[schedule]\n{extra}[run]\nmax_parallel = {max_parallel}\n" +
                         marker_tasks(project.root, ["load", "atr", "volume"], deps={"atr": ["load"]}))
    for session in LOOKBACK[1:]:
        put(r, session, timed_doc(session, {"load": 300.0, "atr": 2400.0, "volume": 1200.0}))
    result = project.cli("status", "--now", NOON)
    assert result.exit_code == 0, result.output
    risk = json.loads(project.cli("status", "--json", "--now", NOON).stdout)["window_risk"]
    assert risk["at_risk"] is at_risk
    assert risk["expected_seconds"] == (3900.0 if max_parallel == 1 else 2700.0)
    assert risk["deadline_seconds"] == (2400.0 if extra else 3600.0)
    assert risk["critical_path"] == ["load", "atr"]
    warning = [line for line in result.stdout.splitlines() if line.startswith("warning: window at risk: ")]
    how = "every task in turn (max_parallel)" if max_parallel == 1 else "the critical path load -> atr"
    message = (f"a cycle takes about {65 if max_parallel == 1 else 45} min by the median durations ({how}), "
               f"{'more' if at_risk else 'less'} than the {40 if extra else 60} min after the window opens that it "
               "should end within")
    assert warning == ([f"warning: window at risk: {message}"] if at_risk else [])
    # status --check: a WARNING line under OK, and still exit 0; check: a `! warn` line, and still exit 0
    check = project.cli("status", "--check", "--now", NOON)
    assert check.exit_code == 0
    risky = [line for line in check.stdout.splitlines() if line.startswith("WARNING: window at risk")]
    assert risky == ([f"WARNING: window at risk: {message}"] if at_risk else [])
    preflight = project.cli("check", "--now", NOON)
    assert preflight.exit_code == 0, preflight.stdout
    deadline = next(line for line in preflight.stdout.splitlines() if " deadline: " in line)
    assert deadline == (f"! warn deadline: window at risk: {message}" if at_risk else f"✓ ok   deadline: {message}")
    assert preflight.stdout.splitlines()[-1].endswith("(1 with a warning: deadline)" if at_risk else "passed")


def test_a_short_task_is_never_slower_than_usual_below_slow_min_seconds(project, r):
    """0.3 s against a median of 0.02 s is 15 times it, and noise: below slow_min_seconds (5 s) it is not flagged."""
    for extra in ("", "[run]\nslow_min_seconds = 0.1\n"):
        project.write_config(extra + marker_tasks(project.root, ["load", "atr"]))
        for session, atr in zip(reversed(LOOKBACK), [0.02] * 6 + [0.3]):
            put(r, session, timed_doc(session, {"load": 5.0, "atr": atr}))
        slow = json.loads(project.cli("status", "--json", "--now", AFTER).stdout)["slow_tasks"]
        trend = json.loads(project.cli("status", "--task", "atr", "--json", "--now", AFTER).stdout)
        table = project.cli("status", "--now", AFTER).stdout
        if extra:
            assert [(t["task"], t["ratio"], t["slow_min_seconds"]) for t in slow] == [("atr", 15.0, 0.1)]
            assert trend["slow"] is True and "slower than usual: atr took 15x its median" in table
        else:
            assert slow == [] and trend["slow"] is False and trend["slow_min_seconds"] == 5.0
            assert "slower" not in table


RAISES = """\
def compute(ctx):
    bars = {"AAPL": None}
    return check(bars)


def check(bars):
    raise ValueError("bad bar for AAPL")
"""


def test_a_failed_python_task_shows_the_last_line_of_its_traceback_and_all_of_it_with_v(project, r):
    (project.root / "raising.py").write_text(RAISES)
    project.write_config('[[tasks]]\nname = "compute"\npython = "raising:compute"\n')
    assert project.cli("run", "--date", "2026-11-27", "--now", AFTER).exit_code == 1
    table = table_rows(project.cli("status", "--date", "2026-11-27", "--now", AFTER).stdout, "task")
    assert table["compute"].split()[1] == "failed" and "ValueError: bad bar for AAPL" in table["compute"]
    verbose = project.cli("-v", "status", "--date", "2026-11-27", "--now", AFTER).stdout
    assert "compute: traceback" in verbose and "Traceback (most recent call last)" in verbose
    assert 'raise ValueError("bad bar for AAPL")' in verbose and "in check" in verbose
    data = json.loads(project.cli("status", "--date", "2026-11-27", "--json", "--now", AFTER).stdout)
    trace = data["sessions"][0]["tasks"][0]["traceback"]
    assert "in check" in trace and trace.rstrip().endswith("ValueError: bad bar for AAPL")


def test_a_failed_session_says_its_attempt_and_its_next_try_in_exchange_time(project, r):
    """The table's note and the dry run give the attempt and the retry time as New York wall time
    (17:10 here, 22:10 UTC), not a UTC instant; once the backoff has passed, no retry time."""
    project.write_config(marker_tasks(project.root, ["a", "b"], fail=("b",)))
    assert project.cli("run", "--now", "2026-11-30T17:05").exit_code == 1
    status = project.cli("status", "--now", "2026-11-30T17:07")
    note = rows(status.stdout)["2026-11-30"]
    assert "failed, attempt 1 of 5, next try after 17:10" in note, status.stdout
    dry = project.cli("run", "--dry-run", "--now", "2026-11-30T17:07")
    assert "failed, attempt 1 of 5, next try after 17:10" in dry.stdout, dry.output
    later = rows(project.cli("status", "--now", "2026-11-30T17:20").stdout)["2026-11-30"]
    assert "failed" in later and "next try" not in later
