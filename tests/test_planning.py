"""Planning semantics (issue 18), through the CLI: one set of rules for every command.

The issue's shape: load_trades, compute_vwap after it, clear_realtime (`catchup = "latest"`,
a `redis.delete_keys` of live keys) and trim_events after clear_realtime. An "all" task after
a "latest" one is refused at load; with trim_events "latest" too, five missed sessions end done
by cron ticks alone, the reset runs only for the newest session whose window has opened, and
never while the exchange is open. The week of 2026-11-16; Thanksgiving is 11-26, 11-27 closes
at 13:00. Window 17:00-17:30 New York.
"""

from __future__ import annotations

import json

import pytest

from conftest import count_runs


MISSED = ["2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20", "2026-11-23"]
TODAY = "2026-11-24"  # a Tuesday


def marker_tasks(directory, names: list[str], deps: dict[str, list[str]] | None = None, extra: str = "",
                 sleep: float = 0) -> str:
    """conftest.marker_tasks through /bin/sh rather than Python (these tests run many cycles): each task appends
    the session to `<name>.started` and `<name>.count`."""
    out = []
    for name in names:
        script = f'echo "$1" >> {directory}/{name}.started; sleep {sleep}; echo "$1" >> {directory}/{name}.count'
        after = f"after = {json.dumps((deps or {}).get(name, []))}\n"
        out.append(f'[[tasks]]\nname = "{name}"\ncommand = ["/bin/sh", "-c", {json.dumps(script)}, "sh", "{{date}}"]\n'
                   f"{after}{extra}")
    return "\n".join(out)


def clear(name: str = "clear_realtime", patterns: str = '"realtime:*"', extra: str = 'catchup = "latest"\n'
          'market_closed_only = true\n') -> str:
    return f'[[tasks]]\nname = "{name}"\nbuiltin = "redis.delete_keys"\nparams = {{ patterns = [{patterns}] }}\n{extra}'


def issue_shape(project, trim: str, schedule: str = "[schedule]\nlookback_sessions = 6\n") -> str:
    root = project.root
    return "\n".join([schedule, marker_tasks(root, ["load_trades"]),
                      marker_tasks(root, ["compute_vwap"], deps={"compute_vwap": ["load_trades"]}), clear(),
                      marker_tasks(root, ["trim_events"], deps={"trim_events": ["clear_realtime"]},
                                   extra=f'catchup = "{trim}"\n')])


def doc(r, session: str) -> dict:
    raw = r.get(f"maintenance:status:{session}")
    return json.loads(raw) if raw else {}


def ticks(day: str, first: str, last: str) -> list[str]:
    """Every half hour from `first` to `last` (HH:MM) on `day`, as cron would call every few minutes."""
    h, m = map(int, first.split(":"))
    out = []
    while f"{h:02d}:{m:02d}" <= last:
        out.append(f"{day}T{h:02d}:{m:02d}")
        h, m = (h, m + 30) if m < 30 else (h + 1, 0)
    return out


# --- 1. one set of rules: the shape is refused at load, or every session ends done ------------------


def test_the_issue_shape_is_refused_at_load_by_every_command_naming_both_tasks(project, r):
    project.write_config(issue_shape(project, trim="all"))
    for args in (("run", "--dry-run"), ("run",), ("recover",), ("run", "--date", MISSED[0])):
        result = project.cli(*args, "--now", f"{TODAY}T06:00")
        assert result.exit_code == 78, (args, result.output)
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.output
        assert ("[tasks.trim_events] after = ['clear_realtime']: trim_events runs for every session (catchup = "
                "\"all\") but clear_realtime only for the newest (catchup = \"latest\"), so older sessions could "
                "never run trim_events: set catchup = \"latest\" on trim_events too, or drop clear_realtime from "
                "its after") in result.stderr
    checked = project.cli("check", "--now", f"{TODAY}T06:00")
    assert checked.exit_code == 78 and "✗ FAIL config:" in checked.stdout and "trim_events" in checked.stdout
    assert r.keys("*") == [] and count_runs(project.root, "load_trades", "started") == []


def test_a_chain_from_an_all_task_to_a_latest_one_is_refused_where_it_first_reaches_latest(project):
    project.write_config(marker_tasks(project.root, ["export"], deps={"export": ["trim"]}) + "\n" +
                         marker_tasks(project.root, ["trim"], deps={"trim": ["reset"]}) + "\n" +
                         marker_tasks(project.root, ["reset"], extra='catchup = "latest"\n'))
    result = project.cli("run", "--dry-run", "--now", f"{TODAY}T06:00")
    assert result.exit_code == 78 and "[tasks.trim] after = ['reset']: trim runs for every session" in result.stderr


def test_a_latest_task_after_all_tasks_loads(project, r):
    """The example pipeline's shape: a snapshot after the loads."""
    project.write_config(marker_tasks(project.root, ["load"]) + "\n" +
                         marker_tasks(project.root, ["snapshot"], deps={"snapshot": ["load"]},
                                      extra='catchup = "latest"\n'))
    assert project.cli("run", "--dry-run", "--now", f"{TODAY}T06:00").exit_code == 0


@pytest.mark.parametrize("first", ["06:00", "10:00"])
def test_five_missed_sessions_end_done_by_cron_ticks_alone(project, r, first):
    """trim_events "latest" too: cron ticks every half hour from `first` (before the open, or while the
    market is open: the catch-up waits for the close) to 18:00 finish every session; the reset and the trim
    run for the newest session whose window had opened at each tick, and no tick deletes live keys while
    the exchange is open (the realtime services write them all day)."""
    project.write_config(issue_shape(project, trim="latest"))
    for now in ticks(TODAY, first, "18:00"):
        r.set("realtime:quote:AAPL", "189.5")
        result = project.cli("run", "--now", now)
        assert result.exit_code == 0, (now, result.output)
        if "09:30" <= now[11:] < "16:00":
            assert r.exists("realtime:quote:AAPL"), f"live keys deleted at {now}"
    assert project.cli("status", "--check", "--now", f"{TODAY}T18:00").exit_code == 0
    assert count_runs(project.root, "load_trades") == MISSED + [TODAY]  # every session, oldest first
    assert count_runs(project.root, "compute_vwap") == MISSED + [TODAY]
    assert count_runs(project.root, "trim_events") == ["2026-11-23", TODAY]
    for session in MISSED[:-1]:
        d = doc(r, session)
        assert d["all_success"] is True and d["tasks"]["clear_realtime"] == d["tasks"]["trim_events"] == "skipped"
        assert d["task_details"]["clear_realtime"]["reason"] == 'catchup = "latest": runs for 2026-11-23 only'
    for session in ("2026-11-23", TODAY):
        assert doc(r, session)["tasks"]["clear_realtime"] == "completed"


def test_an_older_session_planned_alone_leaves_the_latest_tasks_to_the_newest(project, r):
    """The issue: a later tick whose plan held only an older session ran the reset for it. Here 11-20's reset
    failed (its trim was skipped) and the session is retried alone on Tuesday morning: the reset is skipped
    now (the newest opened session is 11-23) and the session is done; only `--task` runs it for 11-20."""
    project.write_config(issue_shape(project, trim="latest"))
    for session in MISSED:
        r.set(f"maintenance:status:{session}", json.dumps({
            "date": session, "started_at": f"{session}T22:00:00+00:00", "completed_at": f"{session}T22:01:00+00:00",
            "all_success": True, "attempts": 1, "tasks": dict.fromkeys(
                ("load_trades", "compute_vwap", "clear_realtime", "trim_events"), "completed")}))
    r.set("maintenance:status:2026-11-20", json.dumps({**doc(r, "2026-11-20"), "all_success": False,
                                                       "tasks": {**doc(r, "2026-11-20")["tasks"],
                                                                 "clear_realtime": "failed",
                                                                 "trim_events": "skipped"}}))
    r.set("realtime:quote:AAPL", "189.5")
    dry = project.cli("run", "--dry-run", "--now", f"{TODAY}T06:00")
    assert dry.stdout.splitlines()[:3] == [
        "would run 2026-11-20 (catch-up: failed (clear_realtime, trim_events)): no tasks",
        '  skip clear_realtime: catchup = "latest": runs for 2026-11-23 only',
        '  skip trim_events: catchup = "latest": runs for 2026-11-23 only']
    assert project.cli("run", "--now", f"{TODAY}T06:00").exit_code == 0
    assert doc(r, "2026-11-20")["all_success"] is True and r.exists("realtime:quote:AAPL")
    for args in (("--force",), ()):
        r.set("maintenance:status:2026-11-20", json.dumps({**doc(r, "2026-11-20"), "all_success": False}))
        result = project.cli("run", "--date", "2026-11-20", *args, "--now", f"{TODAY}T06:00")
        assert result.exit_code == 0 and "(2 left to the newest session" in result.stdout, result.output
        assert r.exists("realtime:quote:AAPL") and doc(r, "2026-11-20")["all_success"] is True
    named = project.cli("run", "--date", "2026-11-20", "--task", "clear_realtime", "--now", f"{TODAY}T06:00")
    assert named.exit_code == 0 and not r.exists("realtime:quote:AAPL")
    d = doc(r, "2026-11-20")
    assert d["tasks"]["clear_realtime"] == "completed" and d["all_success"] is True  # trim's skip still counts


# --- 4. live data waits for the close ---------------------------------------------------------------


def test_recover_of_an_old_session_in_market_hours_never_touches_live_keys(project, r):
    """The issue's second finding: `recover --since D --until D` for a two-week-old session at 11:00. The
    latest reset is skipped (not for that session); an "all" reset waits for the close, as the dry run and
    status say; `--force` and `--task` cannot start it either; after the close the same recover runs it."""
    project.write_config(issue_shape(project, trim="latest") + "\n" +
                         clear("reset_counters", '"counters:*"', "market_closed_only = true\n"))
    r.set("realtime:quote:AAPL", "189.5")
    r.set("counters:trades", "12")
    old = ["--since", "2026-11-10", "--until", "2026-11-10"]
    dry = project.cli("recover", *old, "--dry-run", "--now", f"{TODAY}T11:00")
    assert dry.stdout.splitlines() == [
        "would run 2026-11-10 (no maintenance recorded): load_trades, compute_vwap",
        '  skip clear_realtime: catchup = "latest": runs for 2026-11-23 only',
        '  skip trim_events: catchup = "latest": runs for 2026-11-23 only',
        "  wait reset_counters: waits for the close at 16:00 America/New_York"], dry.output
    result = project.cli("recover", *old, "--now", f"{TODAY}T11:00")
    assert result.exit_code == 0, result.output
    assert ("the session is not done yet, left: reset_counters (waits for the close at 16:00 America/New_York)"
            in result.stdout)
    assert r.get("realtime:quote:AAPL") == "189.5" and r.get("counters:trades") == "12"
    again = project.cli("recover", *old, "--now", f"{TODAY}T11:05")  # nothing it may do before the close
    assert again.exit_code == 0 and again.stdout == \
        "2026-11-10: reset_counters waits for the close at 16:00 America/New_York\n", again.output
    session = project.cli("status", "--date", "2026-11-10", "--json", "--now", f"{TODAY}T11:05")
    view = json.loads(session.stdout)["sessions"][0]
    assert view["state"] == "waiting"
    assert {t["name"]: t["note"] for t in view["tasks"]}["reset_counters"] == \
        "waits for the close at 16:00 America/New_York"
    for args in (("--force",), ("--task", "reset_counters"), ("--task", "reset_counters", "--force")):
        forced = project.cli("run", "--date", "2026-11-10", *args, "--now", f"{TODAY}T11:10")
        assert forced.exit_code == 0 and r.get("counters:trades") == "12", (args, forced.output)
    assert project.cli("run", "--date", "2026-11-10", "--task", "reset_counters", "--now", f"{TODAY}T11:10").stdout \
        == "2026-11-10: reset_counters waits for the close at 16:00 America/New_York\n"
    later = project.cli("recover", *old, "--now", f"{TODAY}T16:05")
    assert later.exit_code == 0 and "2026-11-10: 3/5 tasks completed (2 left to the newest session" in later.stdout, later.output
    assert not r.exists("counters:trades") and r.get("realtime:quote:AAPL") == "189.5"
    assert doc(r, "2026-11-10")["all_success"] is True


def test_a_window_in_market_hours_leaves_the_reset_waiting_and_the_first_run_after_the_close_finishes(project, r):
    """window_start 10:00 with max_attempts = 1 and auto_recover off: the cycle in the window runs the load and
    leaves the reset waiting, which is no failed attempt; status says so with the close time (13:00 on the
    early close); the first tick after the close runs it, whatever auto_recover says."""
    project.write_config("[schedule]\nwindow_start = \"10:00\"\nauto_recover = false\nlookback_sessions = 1\n"
                         "[run]\nmax_attempts = 1\n" +
                         marker_tasks(project.root, ["load"]) + "\n" + clear("reset", extra="market_closed_only = "
                                                                                        "true\n"))
    r.set("realtime:quote:AAPL", "189.5")
    day = "2026-11-27"  # the early close at 13:00
    first = project.cli("run", "--now", f"{day}T10:05")
    assert first.exit_code == 0
    assert first.stdout.startswith(f"{day}: 1/2 tasks completed (1 waiting for the close) in ")
    assert "left: reset (waits for the close at 13:00 America/New_York)" in first.stdout
    assert project.cli("run", "--now", f"{day}T12:00").output == ""  # still open: nothing to do, silent
    check = project.cli("status", "--check", "--now", f"{day}T12:00")
    assert check.exit_code == 1 and f"{day} waiting" in check.stdout
    table = project.cli("status", "--now", f"{day}T12:00").stdout
    assert "waiting" in table and "reset waits for the close at 13:00 America/New_York" in table
    grid = json.loads(project.cli("status", "--grid", "--json", "--now", f"{day}T12:00").stdout)
    assert grid["sessions"][0]["cells"] == {"load": "completed", "reset": "waiting"}
    assert r.exists("realtime:quote:AAPL")
    dry = project.cli("run", "--dry-run", "--now", f"{day}T13:05")
    assert dry.stdout == f"would run {day} (finishing: reset waited for the close): reset\n"
    done = project.cli("run", "--now", f"{day}T13:05")
    assert done.exit_code == 0 and f"{day}: 2/2 tasks completed" in done.stdout
    assert not r.exists("realtime:quote:AAPL") and count_runs(project.root, "load") == [day]
    assert project.cli("status", "--check", "--now", f"{day}T13:10").exit_code == 0


def test_a_cycle_that_runs_into_the_open_leaves_the_reset_waiting(project, r):
    """Planned at 09:29:59 (the market closed), the load takes 1.5 s: by the time the reset could start the
    exchange is open, so it is left waiting, and so is the task after it."""
    project.write_config(marker_tasks(project.root, ["load"], sleep=1.5) + "\n" +
                         clear("reset", extra="market_closed_only = true\n") + "\n" +
                         marker_tasks(project.root, ["export"], deps={"export": ["reset"]}))
    r.set("realtime:quote:AAPL", "189.5")
    dry = project.cli("run", "--date", "2026-11-23", "--dry-run", "--now", f"{TODAY}T09:29:59")
    assert dry.stdout.startswith("would run 2026-11-23 (manual: no maintenance recorded): load, reset, export")
    result = project.cli("run", "--date", "2026-11-23", "--now", f"{TODAY}T09:29:59")
    assert result.exit_code == 0, result.output
    d = doc(r, "2026-11-23")
    assert d["tasks"] == {"load": "completed", "reset": "pending", "export": "pending"}
    assert d["task_details"]["reset"]["reason"] == "waits for the close at 16:00 America/New_York"
    assert d["task_details"]["export"]["reason"] == "waits for the close at 16:00 America/New_York, after reset"
    assert r.exists("realtime:quote:AAPL") and count_runs(project.root, "export", "started") == []


# --- 5. check explains the plan -----------------------------------------------------------------------


def test_check_shows_each_tasks_policy_and_warns_about_shapes_an_operator_could_misread(project, r):
    project.write_config(marker_tasks(project.root, ["load"]) + "\n" + clear("wipe", extra="") + "\n" +
                         clear("reset", extra='catchup = "latest"\nmarket_closed_only = true\n') + "\n" +
                         marker_tasks(project.root, ["export"], deps={"export": ["reset", "load"]},
                                      extra='catchup = "latest"\n'))
    result = project.cli("check", "--now", f"{TODAY}T12:00")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert ("✓ ok   plan: load: every session; wipe: every session; reset: the newest session only, never while "
            "the exchange is open; export: the newest session only, after reset, load") in lines
    assert ("! warn plan wipe: redis.delete_keys without market_closed_only = true: `recover`, `run --date` or a "
            "window in market hours can delete live keys while the exchange is open; add market_closed_only = "
            "true") in lines
    assert ("! warn plan reset: market_closed_only, and export runs after it: while the exchange is open they "
            "wait for the close too; set market_closed_only = true on them to say so, or drop the dependency") in lines
    assert lines[-1].endswith("checks passed (2 with a warning: plan wipe, plan reset)")
    doc_ = json.loads(project.cli("check", "--json", "--now", f"{TODAY}T12:00").stdout)
    assert doc_["ok"] is True
    assert [c["name"] for c in doc_["checks"] if c["warning"]] == ["plan wipe", "plan reset"]


def test_a_dry_run_says_when_another_run_holds_the_lock(project, r):
    project.write_config(marker_tasks(project.root, ["load"]))
    r.set("maintenance:lock", json.dumps({"host": "db1", "pid": 7, "since": "2026-11-24T22:00:00+00:00",
                                          "run_id": "feedface", "nonce": "n"}), px=60_000)
    dry = project.cli("run", "--dry-run", "--now", f"{TODAY}T17:05")
    assert dry.stdout.splitlines()[-1].startswith("but the lock is held by ")
    assert dry.stdout.splitlines()[-1].endswith("this call would run nothing and exit 0 now")
    assert project.cli("run", "--now", f"{TODAY}T17:05").exit_code == 0
    manual = project.cli("run", "--date", TODAY, "--dry-run", "--now", f"{TODAY}T17:05")
    assert manual.stdout.splitlines()[-1].endswith("this call would run nothing and exit 75 now")
    assert project.cli("run", "--date", TODAY, "--now", f"{TODAY}T17:05").exit_code == 75
    assert count_runs(project.root, "load", "started") == []
