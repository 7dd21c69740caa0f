"""A session's history: lateness against its deadline, every cycle and attempt kept and shown, and the audit
trail of what started each cycle, by whom, from where. Sessions are seeded by real runs with --now.

Window 17:00-17:30 New York; the deadline is the default twice window_minutes, 18:00.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import signal
import socket

import pytest

from conftest import count_runs, marker_tasks, wait_for
from tradeul_maint.state import (ATTEMPT_ERROR_LIMIT, MAX_ATTEMPTS, MAX_CYCLES, AttemptRecord, CycleRecord,
                                 SessionStatus, cap_error)

QUIET = "[schedule]\nauto_recover = false\nlookback_sessions = 2\n"
USER, HOST = pwd.getpwuid(os.getuid()).pw_name, socket.gethostname()
LATE_25 = 38 * 3600  # 2026-11-25's deadline is 18:00 that day; it is done at 08:00 on the 27th


def status_json(project, *args: str, now: str) -> dict:
    result = project.cli("status", "--json", *args, "--now", now)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def by_date(doc: dict) -> dict[str, dict]:
    return {s["date"]: s for s in doc["sessions"]}


def seed_late(project, extra: str = "") -> None:
    """The 24th done in its window by cron, the 25th caught up by `recover` on the 27th at 08:00."""
    (project.root / "metrics").mkdir(exist_ok=True)
    project.write_config(QUIET + extra + '[metrics]\ntextfile = "metrics/m.prom"\n'
                         + marker_tasks(project.root, ["a", "b"], deps={"b": ["a"]}))
    assert project.cli("run", "--now", "2026-11-24T17:05").exit_code == 0
    assert project.cli("recover", "--since", "2026-11-25", "--until", "2026-11-25",
                       "--now", "2026-11-27T08:00").exit_code == 0


# --- lateness --------------------------------------------------------------------------------------------


def test_a_session_done_after_its_deadline_is_late_in_every_view(project, r):
    seed_late(project)
    now = "2026-11-27T09:00"  # the 27th's window has not opened: the 25th is the newest done session
    sessions = by_date(status_json(project, now=now))
    late = sessions["2026-11-25"]
    assert late["state"] == "done" and late["deadline"] == "2026-11-25T23:00:00.000+00:00"
    assert LATE_25 <= late["late_seconds"] < LATE_25 + 60 and late["done_at"].startswith("2026-11-27T13:00")

    table = project.cli("status", "--now", now).stdout
    row = next(line for line in table.splitlines() if line.startswith("2026-11-25"))
    assert row.split()[1:3] == ["done", "late"]
    assert row.endswith("done 38h00m after its deadline (2026-11-25 18:00), at 2026-11-27 08:00")

    one = project.cli("status", "--date", "2026-11-25", "--now", now).stdout.splitlines()
    assert one[0].startswith("2026-11-25: done late, 2/2 tasks completed, 1 cycle")
    assert one[1] == "late: done 38h00m after its deadline (2026-11-25 18:00), at 2026-11-27 08:00"

    check = project.cli("status", "--check", "--now", now)
    assert check.exit_code == 0  # a warning, not a failure: the session is done
    assert check.stdout.splitlines() == [
        "OK: all 1 XNYS sessions whose window has passed are done",
        "WARNING: 2026-11-25 was done 38h00m after its deadline (2026-11-25 18:00), at 2026-11-27 08:00"]
    metrics = (project.root / "metrics" / "m.prom").read_text()
    value = next(line for line in metrics.splitlines()
                 if line.startswith('tradeul_maint_session_late_seconds{maint_job="maintenance",session="2026-11-25"}'))
    assert LATE_25 <= float(value.split()[-1]) < LATE_25 + 60


def test_the_warning_clears_once_the_newest_session_is_done_on_time(project, r):
    seed_late(project)
    assert project.cli("run", "--now", "2026-11-27T17:05").exit_code == 0
    check = project.cli("status", "--check", "--now", "2026-11-27T18:30")
    assert (check.exit_code, check.stdout.splitlines()) == \
        (0, ["OK: all 2 XNYS sessions whose window has passed are done"])
    sessions = by_date(status_json(project, now="2026-11-27T18:30"))
    assert sessions["2026-11-27"]["late_seconds"] == 0.0 and sessions["2026-11-25"]["late_seconds"] >= LATE_25
    metrics = (project.root / "metrics" / "m.prom").read_text()
    assert 'tradeul_maint_session_late_seconds{maint_job="maintenance",session="2026-11-27"} 0' in metrics


def test_a_forced_rerun_later_does_not_make_a_session_late(project, r):
    seed_late(project)
    assert project.cli("run", "--date", "2026-11-24", "--force", "--now", "2026-11-27T09:30").exit_code == 0
    session = status_json(project, "--date", "2026-11-24", now="2026-11-27T10:00")["sessions"][0]
    assert session["late_seconds"] == 0.0 and session["done_at"].startswith("2026-11-24T22:05")
    assert [(c["trigger"], c["session_done"]) for c in session["cycles"]] == \
        [("cron", True), ("run --date --force", True)]


def test_deadline_minutes_moves_the_deadline(project, r):
    seed_late(project, extra="deadline_minutes = 3000\n")  # 50 hours: 19:00 on the 27th
    late = by_date(status_json(project, now="2026-11-27T09:00"))["2026-11-25"]
    assert late["deadline"] == "2026-11-28T00:00:00.000+00:00" and late["late_seconds"] == 0.0
    assert project.cli("status", "--check", "--now", "2026-11-27T09:00").stdout.count("WARNING") == 0


def test_a_session_not_done_has_no_lateness(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a"], fail=("a",)))
    assert project.cli("run", "--date", "2026-11-25", "--now", "2026-11-27T08:00").exit_code == 1
    failed = by_date(status_json(project, now="2026-11-27T09:00"))["2026-11-25"]
    assert (failed["state"], failed["late_seconds"], failed["done_at"]) == ("failed", None, None)


# --- every cycle and attempt, and what started each --------------------------------------------------------


def test_every_cycle_and_attempt_is_kept_with_what_started_it(project, r):
    flag = project.root / "fixed"
    project.write_config(QUIET + f"""
[[tasks]]
name = "a"
command = ["true"]

[[tasks]]
name = "b"
command = ["sh", "-c", "test -e {flag} || {{ echo upstream not ready >&2; exit 3; }}"]
after = ["a"]
retries = 1
retry_delay = 1
""")
    assert project.cli("run", "--date", "2026-11-25", "--now", "2026-11-25T17:05").exit_code == 1
    flag.touch()
    assert project.cli("recover", "--since", "2026-11-25", "--now", "2026-11-25T17:50").exit_code == 0
    assert project.cli("run", "--date", "2026-11-25", "--task", "a", "--now", "2026-11-26T09:00").exit_code == 0

    session = status_json(project, "--date", "2026-11-25", now="2026-11-26T10:00")["sessions"][0]
    cycles = session["cycles"]
    assert [(c["cycle"], c["trigger"], c["outcome"], c["session_done"], c["user"], c["host"]) for c in cycles] == [
        (1, "run --date", "failed", False, USER, HOST), (2, "recover", "completed", True, USER, HOST),
        (3, "run --date --task a", "completed", True, USER, HOST)]
    assert [[(a["task"], a["attempt"], a["outcome"]) for a in c["attempts"]] for c in cycles] == [
        [("a", 1, "completed"), ("b", 1, "failed"), ("b", 2, "failed")], [("b", 1, "completed")],
        [("a", 1, "completed")]]
    assert cycles[0]["attempts"][1]["error"] == "sh failed with exit code 3"
    assert cycles[0]["started_at"].startswith("2026-11-25T22:05") and cycles[2]["started_at"].startswith(
        "2026-11-26T14:00")
    assert all(c["run_id"] for c in cycles) and len({c["run_id"] for c in cycles}) == 3
    assert session["run_id"] == cycles[-1]["run_id"]

    out = project.cli("status", "--date", "2026-11-25", "--now", "2026-11-26T10:00").stdout
    lines = out.splitlines()
    assert lines[0].startswith("2026-11-25: done, 2/2 tasks completed, 3 cycles")
    assert lines[1].startswith("3 cycles from 2026-11-25 17:05 to 2026-11-26 09:00: 15h55m wall time; the cycles "
                               "took ")
    heads = [line for line in lines if line.startswith("cycle ")]
    assert heads == [f"cycle 1 of 3, run --date by {USER} on {HOST} (run {cycles[0]['run_id']}): failed",
                     f"cycle 2 of 3, recover by {USER} on {HOST} (run {cycles[1]['run_id']}): completed",
                     f"cycle 3 of 3, run --date --task a by {USER} on {HOST} (run {cycles[2]['run_id']}): completed"]
    first = lines.index(heads[0])
    assert lines[first + 1].startswith("timeline: 17:05:00 to 17:05:0")  # a second apart and more under load
    bars = {line.split()[0]: line.split(" ", 1)[1] for line in lines[first + 2:first + 4]}
    assert set(bars["a"].strip("│ ")) == {"█"}
    assert bars["b"].count("▓") >= 2 and " " in bars["b"].strip("│ ")  # two failed attempts, a retry delay apart
    later = lines[lines.index(heads[2]) + 1]
    assert later.startswith("timeline: 2026-11-26 09:00:00 to 09:00:0")  # on another day than the session's


def test_cron_and_forced_runs_are_named_in_the_audit_trail_with_the_account_that_ran_them(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    assert project.cli("run", "--now", "2026-11-25T17:05").exit_code == 0
    assert project.cli("run", "--date", "2026-11-25", "--force", "--now", "2026-11-25T17:20",
                       SUDO_USER="alice", USER="someone-else").exit_code == 0
    text = project.cli("status", "--date", "2026-11-25", "--now", "2026-11-25T18:00").stdout
    assert [line.split(" (run ")[0] for line in text.splitlines() if line.startswith("cycle ")] == \
        [f"cycle 1 of 2, cron by {USER} on {HOST}",
         f"cycle 2 of 2, run --date --force by {USER} (sudo by alice) on {HOST}"]  # $USER is not who ran it


def test_a_signal_ends_the_cycle_as_interrupted_with_its_attempt(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b"], sleep={"b": 30}))
    runner = project.spawn("run", "--date", "2026-11-25")
    assert wait_for(lambda: count_runs(project.root, "b", "started"))
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(15) == 143
    runner.communicate()
    cycle = json.loads(r.get("maintenance:status:2026-11-25"))["cycles"][-1]
    assert cycle["outcome"] == "interrupted by SIGTERM" and cycle["finished_at"]
    assert [(a["task"], a["outcome"]) for a in cycle["attempts"]] == [("a", "completed"), ("b", "interrupted")]
    assert cycle["attempts"][1]["error"] == "interrupted by SIGTERM"


DEAD = {"date": "2026-11-25", "started_at": "2026-11-25T22:05:00+00:00", "completed_at": None,
        "all_success": False, "tasks": {"a": "completed", "b": "in_progress"}, "attempts": 1, "run_id": "dead",
        "task_details": {"a": {"started_at": "2026-11-25T22:05:00+00:00", "finished_at": "2026-11-25T22:05:10+00:00",
                               "duration_seconds": 10.0, "attempts": 1},
                         "b": {"started_at": "2026-11-25T22:05:10+00:00"}},
        "cycles": [{"started_at": "2026-11-25T22:05:00+00:00", "trigger": "cron", "user": "ops", "host": "old-host",
                    "run_id": "dead",
                    "attempts": [{"task": "a", "attempt": 1, "started_at": "2026-11-25T22:05:00+00:00",
                                  "finished_at": "2026-11-25T22:05:10+00:00", "outcome": "completed"}]}]}


def test_a_cycle_whose_runner_died_shows_interrupted_and_the_next_cycle_closes_it(project, r):
    """b's attempt reached Redis only as its task's transition (the cycle's record goes with the next whole
    write), then the runner died: b is drawn from its task record, as interrupted."""
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b"]))
    r.set("maintenance:status:2026-11-25", json.dumps(DEAD))
    shown = status_json(project, "--date", "2026-11-25", now="2026-11-25T17:30")["sessions"][0]
    assert shown["state"] == "interrupted"
    assert [(c["outcome"], [(a["task"], a["outcome"]) for a in c["attempts"]]) for c in shown["cycles"]] == \
        [("interrupted: its runner stopped", [("a", "completed"), ("b", "interrupted")])]
    text = project.cli("status", "--date", "2026-11-25", "--now", "2026-11-25T17:30").stdout
    assert "cycle 1 of 1, cron by ops on old-host (run dead): interrupted: its runner stopped" in text
    b_row = next(line for line in text.splitlines() if line.startswith("b ") and "│" in line)
    assert "░" in b_row

    assert project.cli("run", "--date", "2026-11-25", "--now", "2026-11-25T17:40").exit_code == 0
    cycles = json.loads(r.get("maintenance:status:2026-11-25"))["cycles"]
    assert cycles[0]["outcome"] == "interrupted: its runner stopped" and cycles[1]["outcome"] == "completed"


def test_a_running_cycle_draws_the_attempt_its_record_does_not_have_yet(project, r):
    running = {**DEAD, "run_id": "live", "cycles": [{**DEAD["cycles"][0], "run_id": "live"}]}
    r.set("maintenance:status:2026-11-25", json.dumps(running))
    r.set("maintenance:lock", json.dumps({"host": "h", "pid": 1, "since": "x", "run_id": "live", "nonce": "n"}),
          px=60000)
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b"]))
    shown = status_json(project, "--date", "2026-11-25", now="2026-11-25T17:06")["sessions"][0]
    assert shown["cycles"][0]["outcome"] == "running"
    b = shown["cycles"][0]["attempts"][1]
    assert (b["task"], b["outcome"], b["finished_at"]) == ("b", "running", None)
    assert {t["name"]: t["bar"] for t in shown["tasks"]}["b"] == {"start_seconds": 10.0, "end_seconds": 60.0,
                                                                   "open": True}


# --- the bounds and the shape of what is kept ----------------------------------------------------------------


def test_a_document_keeps_the_last_cycles_and_attempts_and_caps_errors():
    status = SessionStatus(dt.date(2026, 11, 25))
    for n in range(MAX_CYCLES + 5):
        status.begin_cycle(CycleRecord(started_at=f"2026-11-25T22:{n:02d}:00+00:00", run_id=str(n)))
    assert len(status.cycles) == MAX_CYCLES and status.cycles[0].run_id == "5"
    cycle = status.cycle
    for n in range(1, MAX_ATTEMPTS + 4):
        cycle.add_attempt(AttemptRecord("a", n, "2026-11-25T22:30:00+00:00"))
    cycle.add_attempt(AttemptRecord("b", 1, "2026-11-25T22:31:00+00:00"))
    assert [a.attempt for a in cycle.attempts if a.task == "a"] == list(range(4, MAX_ATTEMPTS + 4))
    assert [a.task for a in cycle.attempts][-1] == "b"
    assert len(cap_error("x" * 5000)) == ATTEMPT_ERROR_LIMIT and cap_error("short") == "short"
    again = SessionStatus.from_json(status.session, status.to_json())
    assert again.corrupt is None and again.cycles == status.cycles


@pytest.mark.parametrize("cycles, where", [
    ("nope", "cycles is \"nope\", not a list"),
    ([1], "cycles.0 is 1, not an object"),
    ([{"attempts": [{"task": "a", "outcome": 3}]}], "cycles.0.attempts.0.outcome is 3, not a string"),
    ([{"attempts": [{"attempt": 1}]}], "cycles.0.attempts.0.task is missing"),
    ([{"only": ["a", 2]}], "cycles.0.only holds something other than task names"),
    ([{"started_at": "yesterday"}], "cycles.0.started_at is \"yesterday\", not a timestamp"),
])
def test_a_mistyped_cycle_makes_the_document_unreadable_not_a_crash(project, r, cycles, where):
    doc = {**DEAD, "cycles": cycles}
    status = SessionStatus.from_json(dt.date(2026, 11, 25), json.dumps(doc))
    assert status.corrupt == where
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b"]))
    r.set("maintenance:status:2026-11-25", json.dumps(doc))
    result = project.cli("status", "--date", "2026-11-25", "--now", "2026-11-25T18:00")
    assert result.exit_code == 0 and f"status document unreadable: {where}" in result.stdout
