"""Jobs (issue 24), through the CLI against a real redis-server, time driven by --now across whole days.

Every phase of the trading day as `[jobs.NAME]`: windows on each session's own open and close ("HH:MM",
"open-5h45m", "open+30m", "close+60m", "close-15m", up to 24 h), a catch-up policy per job ("all",
"latest", "none": a missed window expires), tasks that wait for their data (`wait_for`, probed on each
tick), and one `run` for the whole day, each job under its own lock. The top-level pipeline is the job
`maintenance`, its keys unchanged. Thanksgiving is 2026-11-26; 2026-11-27 closes at 13:00; DST starts
2026-03-08 and ends 2026-11-01 (both Sundays).
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from conftest import REPO, count_runs
from test_notify import Recorder, serve

UTC = dt.timezone.utc


def task(directory, name: str, after: tuple[str, ...] = (), extra: str = "", table: str = "tasks") -> str:
    """A command task (through /bin/sh, cheaper than Python) appending the session to `<name>.count`."""
    script = f'echo "$1" >> {directory}/{name}.count'
    return (f'[[{table}]]\nname = "{name}"\ncommand = ["/bin/sh", "-c", {json.dumps(script)}, "sh", "{{date}}"]\n'
            f"after = {json.dumps(list(after))}\n{extra}")


def job(directory, name: str, window: str, minutes: int = 30, catchup: str = "all", tasks: tuple[str, ...] = (),
        extra: str = "", task_extra: str = "") -> str:
    """`[jobs.NAME]` with its window and one marker task per name (default: the job's own name)."""
    head = (f'[jobs.{name}]\nwindow_start = "{window}"\nwindow_minutes = {minutes}\ncatchup = "{catchup}"\n'
            f"{extra}")
    return head + "\n".join(task(directory, t, extra=task_extra, table=f"jobs.{name}.tasks")
                            for t in tasks or (name,))


def doc(r, key: str) -> dict:
    raw = r.get(key)
    return json.loads(raw) if raw else {}


def due(output: str, only: str = "") -> set[tuple[str, str]]:
    """(job, session) of each `JOB: would run SESSION (inside its window ...)` line of a dry run; with one job
    (`only`) the lines do not name it."""
    if only:
        return {(only, d) for d in re.findall(r"^would run (\S+) \(inside its window", output, re.MULTILINE)}
    return set(re.findall(r"^(\w+): would run (\S+) \(inside its window", output, re.MULTILINE))


# --- 2. windows around the open ---------------------------------------------------------------------------

FORMS = {"wall": "17:00", "premarket": "open-5h45m", "opening": "open+30m", "after": "close+60m",
         "closing": "close-15m", "night": "open-10h"}
# (job, session, its window's start in UTC): a normal Wednesday (EST), the early close (13:00), the Fridays before
# each DST change and the Mondays after. "open-10h" opens on the evening before its session (a Sunday for Monday).
WINDOWS = [
    ("wall", "2026-11-25", "22:00"), ("premarket", "2026-11-25", "08:45"), ("opening", "2026-11-25", "15:00"),
    ("after", "2026-11-25", "22:00"), ("closing", "2026-11-25", "20:45"),
    ("wall", "2026-11-27", "22:00"), ("premarket", "2026-11-27", "08:45"), ("opening", "2026-11-27", "15:00"),
    ("after", "2026-11-27", "19:00"), ("closing", "2026-11-27", "17:45"),  # closes 13:00 EST: 14:00 and 12:45
    ("wall", "2026-03-06", "22:00"), ("premarket", "2026-03-06", "08:45"), ("after", "2026-03-06", "22:00"),
    ("wall", "2026-03-09", "21:00"), ("premarket", "2026-03-09", "07:45"), ("after", "2026-03-09", "21:00"),
    ("closing", "2026-03-09", "19:45"), ("night", "2026-03-09", "03:30"),  # Sunday 23:30 EDT, just after DST began
    ("wall", "2026-10-30", "21:00"), ("premarket", "2026-10-30", "07:45"), ("opening", "2026-10-30", "14:00"),
    ("wall", "2026-11-02", "22:00"), ("premarket", "2026-11-02", "08:45"), ("opening", "2026-11-02", "15:00"),
    ("night", "2026-11-02", "04:30"),  # Sunday 23:30 EST, the day DST ended
]


def window_start(session: str, hhmm: str) -> dt.datetime:
    """The UTC instant `hhmm` of the session's (UTC) day."""
    return dt.datetime.combine(dt.date.fromisoformat(session), dt.time.fromisoformat(hhmm), UTC)


def test_each_window_form_opens_on_its_sessions_own_open_and_close(project):
    """Each form on a normal day, the early close and both DST changes: a dry run a minute before each window
    has that job due for nothing, at its start it is due for its session, at its end (exclusive) not."""
    project.write_config("[schedule]\nlookback_sessions = 1\n" + "\n".join(
        job(project.root, name, form, catchup="none") for name, form in FORMS.items()))
    expected = {(name, session, window_start(session, hhmm)) for name, session, hhmm in WINDOWS}
    minute = dt.timedelta(minutes=1)
    for name, session, start in sorted(expected, key=lambda w: w[2]):
        for moment, inside in ((start - minute, False), (start, True), (start + 30 * minute, False)):
            result = project.cli("run", "--dry-run", "--now", moment.isoformat())
            assert result.exit_code == 0, result.output
            assert ((name, session) in due(result.stdout)) == inside, (name, session, moment, result.stdout)
    # The wall-time window is that day's 17:00 whatever the offset; the others say their local window.
    dry = project.cli("run", "--dry-run", "--now", "2026-11-27T14:05").stdout
    assert "after: would run 2026-11-27 (inside its window (14:00-14:30)): after" in dry
    sunday = project.cli("run", "--dry-run", "--now", "2026-11-01T23:45").stdout  # Monday's, the evening before
    assert "night: would run 2026-11-02 (inside its window (23:30-00:00 the next day)): night" in sunday


def test_a_window_of_up_to_24_hours_runs_its_session_across_midnight_and_no_longer(project, r):
    project.write_config("[schedule]\nlookback_sessions = 2\n"
                         + job(project.root, "watch", "close+60m", minutes=1440, catchup="none"))
    for now, session in (("2026-11-25T03:00", "2026-11-24"), ("2026-11-25T16:59", "2026-11-24"),
                         ("2026-11-25T17:00", "2026-11-25")):
        assert due(project.cli("run", "--dry-run", "--now", now).stdout, "watch") == {("watch", session)}
    assert project.cli("run", "--now", "2026-11-25T16:59").exit_code == 0
    assert count_runs(project.root, "watch") == ["2026-11-24"]
    project.write_config(job(project.root, "watch", "close+60m", minutes=1441))
    result = project.cli("run", "--dry-run")
    assert result.exit_code == 78 and "[jobs.watch] window_minutes = 1441: must be between 1 and 1440" in \
        result.stderr


# --- 3. windows that expire; 1. jobs with their own state -------------------------------------------------

def seed_done(r, prefix: str, names: list[str], sessions: list[str]) -> None:
    for session in sessions:
        r.set(f"{prefix}:status:{session}", json.dumps({
            "date": session, "started_at": f"{session}T22:00:00+00:00", "completed_at": f"{session}T22:01:00+00:00",
            "all_success": True, "attempts": 1, "tasks": dict.fromkeys(names, "completed")}))


def test_a_pre_open_job_skips_the_holiday_expires_when_missed_and_an_all_job_is_caught_up(project, r):
    """Wednesday before Thanksgiving: the host is down from 02:00 to 18:00, so the pre-open job's window (03:45)
    and the end-of-day job's (17:00) pass without a run. At 18:00 the end-of-day session is caught up ("all"); the
    pre-open one is expired: never run by `run` or `recover`, and `status --check` is NOT OK until the pre-open
    job's next window has completed, which is Friday's: on Thanksgiving nothing runs all day."""
    root = project.root
    project.write_config("[schedule]\nlookback_sessions = 3\n" + task(root, "load") + "\n"
                         + job(root, "premarket", "open-5h45m", catchup="none", tasks=("reset",)))
    seed_done(r, "maintenance", ["load"], ["2026-11-23", "2026-11-24"])
    seed_done(r, "maintenance:premarket", ["reset"], ["2026-11-23", "2026-11-24"])
    assert project.cli("run", "--now", "2026-11-25T18:00").exit_code == 0
    assert count_runs(root, "load") == ["2026-11-25"] and count_runs(root, "reset") == []
    assert doc(r, "maintenance:status:2026-11-25")["all_success"] is True
    assert doc(r, "maintenance:premarket:status:2026-11-25") == {}
    check = project.cli("status", "--check", "--now", "2026-11-25T18:05")
    assert check.exit_code == 1 and [line for line in check.stdout.splitlines() if "WARNING" not in line] == [
        "NOT OK: 1 of 2 jobs: premarket",
        "maintenance: OK: all 3 XNYS sessions whose window has passed are done",
        "premarket: NOT OK: 1 of 3 sessions whose window has passed are not done: 2026-11-25 expired"]
    view = json.loads(project.cli("status", "--json", "--job", "premarket", "--now", "2026-11-25T18:05").stdout)
    expired = view["sessions"][0]
    assert (view["job"], expired["state"]) == ("premarket", "expired")
    assert expired["note"].startswith('expired (catchup = "none"): its window ended at 04:15 without a completed '
                                      "cycle: `run --job premarket --date 2026-11-25 --force` runs it")
    recover = project.cli("recover", "--now", "2026-11-25T18:10")
    assert recover.exit_code == 0 and "premarket: nothing to recover: every session whose window has passed is " \
                                      "done or expired" in recover.stdout
    # What it tells to type names the job: `run --date D --force` alone would force every job's session D.
    assert "(`run --job premarket --date 2026-11-25 --force` runs it)" in \
        project.cli("recover", "--dry-run", "--now", "2026-11-25T18:10").stdout
    # Thanksgiving: a tick every half hour, all day: no session, so no window, for either job.
    for hour in range(24):
        for minute in (0, 30):
            tick = project.cli("run", "--now", f"2026-11-26T{hour:02d}:{minute:02d}")
            assert (tick.exit_code, tick.output) == (0, ""), (hour, minute, tick.output)
    assert count_runs(root, "reset") == [] and project.cli("status", "--check", "--now",
                                                           "2026-11-26T23:59").exit_code == 1
    # Friday 03:45: the pre-open job runs Friday's session, and the job is healthy again.
    assert project.cli("run", "--now", "2026-11-27T03:40").output == ""
    assert project.cli("run", "--now", "2026-11-27T03:50").exit_code == 0
    assert count_runs(root, "reset") == ["2026-11-27"]
    assert project.cli("status", "--check", "--now", "2026-11-27T04:30").exit_code == 0
    # Only naming it runs an expired session: --force.
    named = project.cli("run", "--job", "premarket", "--date", "2026-11-25", "--now", "2026-11-27T04:30")
    assert named.stdout.startswith("premarket: 2026-11-25: expired (catchup = \"none\")") and \
        "(use --force to run it)" in named.stdout and count_runs(root, "reset") == ["2026-11-27"]
    forced = project.cli("run", "--job", "premarket", "--date", "2026-11-25", "--force", "--now", "2026-11-27T04:30")
    assert forced.exit_code == 0 and count_runs(root, "reset") == ["2026-11-27", "2026-11-25"]


def test_a_none_job_retries_a_failed_cycle_inside_its_window_and_never_after_it(project, r):
    """catchup = "none": a cycle that failed at 03:46 is retried at the first tick after the backoff while the
    window (03:45-04:15) lasts; once it has ended, the session is expired, not retried, and not OK."""
    root = project.root
    script = f'echo "$1" >> {root}/reset.count; test -e {root}/ok'
    project.write_config(
        "[schedule]\nlookback_sessions = 1\n[run]\nretry_backoff_minutes = 5\n"
        '[jobs.premarket]\nwindow_start = "open-5h45m"\ncatchup = "none"\n[[jobs.premarket.tasks]]\n'
        f'name = "reset"\ncommand = ["/bin/sh", "-c", {json.dumps(script)}, "sh", "{{date}}"]\n')
    assert project.cli("run", "--now", "2026-11-25T03:46").exit_code == 1
    assert project.cli("run", "--now", "2026-11-25T03:50").output == ""  # the backoff: next try after 03:51
    assert project.cli("run", "--now", "2026-11-25T04:10").exit_code == 1
    assert count_runs(root, "reset") == ["2026-11-25", "2026-11-25"]
    (root / "ok").touch()
    dry = project.cli("run", "--dry-run", "--now", "2026-11-25T04:16").stdout
    assert 'leave 2026-11-25: expired (catchup = "none"): its window ended at 04:15' in dry, dry
    assert project.cli("run", "--now", "2026-11-25T04:16").output == ""
    assert project.cli("recover", "--now", "2026-11-25T18:00").exit_code == 0
    assert count_runs(root, "reset") == ["2026-11-25", "2026-11-25"]
    assert doc(r, "maintenance:premarket:status:2026-11-25")["attempts"] == 2
    check = project.cli("status", "--check", "--now", "2026-11-25T18:00")
    assert check.exit_code == 1 and "2026-11-25 expired" in check.stdout


def test_a_latest_job_catches_up_only_its_newest_missed_session(project, r):
    root = project.root
    project.write_config("[schedule]\nlookback_sessions = 4\n"
                         + job(root, "refresh", "01:00", minutes=60, catchup="latest"))
    dry = project.cli("run", "--dry-run", "--now", "2026-11-25T06:00")
    assert dry.stdout.splitlines() == [
        'leave 2026-11-20: expired (catchup = "latest"): 2026-11-25 is newer',
        'leave 2026-11-23: expired (catchup = "latest"): 2026-11-25 is newer',
        'leave 2026-11-24: expired (catchup = "latest"): 2026-11-25 is newer',
        "would run 2026-11-25 (catch-up: no maintenance recorded): refresh"]
    assert project.cli("run", "--now", "2026-11-25T06:00").exit_code == 0
    assert count_runs(root, "refresh") == ["2026-11-25"]
    assert project.cli("status", "--check", "--now", "2026-11-25T06:05").exit_code == 0


# --- 4. tasks that wait for data ---------------------------------------------------------------------------

def test_a_task_waiting_for_its_file_is_probed_each_tick_and_runs_once_it_appears_or_fails_at_the_end(project, r):
    """The flat-file watcher: from 17:00 to 09:00, each tick probes for the session's file. Waiting is no attempt
    and no failure: the tick exits 0 silently, and what runs after the task waits too; another job due at the
    same ticks runs meanwhile. The file appears at 20:10: the 20:30 tick syncs it and the export after it, once.
    The next session's file never comes: the first tick after 09:00 fails the task, with the reason."""
    root = project.root
    flat = root / "flat"
    flat.mkdir()
    project.write_config(
        "[schedule]\nlookback_sessions = 2\n"
        + job(root, "flat", "close+60m", minutes=960, tasks=("sync",),
              task_extra=f'wait_for = ["test", "-e", "{flat}/{{date}}.csv"]\n')
        + "\n" + task(root, "export", after=("sync",), table="jobs.flat.tasks")
        + "\n" + job(root, "earnings", "close+60m", minutes=240))
    seed_done(r, "maintenance:flat", ["sync", "export"], ["2026-11-24"])
    seed_done(r, "maintenance:earnings", ["earnings"], ["2026-11-24"])
    for now in ("2026-11-25T17:00", "2026-11-25T17:30", "2026-11-25T18:00", "2026-11-25T20:00"):
        tick = project.cli("run", "--now", now)
        said = "earnings: 2026-11-25: 1/1 tasks completed in " if now.endswith("17:00") else ""
        assert tick.exit_code == 0 and tick.output.startswith(said) and tick.output.count("\n") == bool(said), \
            (now, tick.output)
        status = doc(r, "maintenance:flat:status:2026-11-25")
        assert status["attempts"] == 0 and status["tasks"] == {"sync": "pending", "export": "pending"}
        details = status["task_details"]
        assert details["sync"]["reason"].startswith("waits for data (test failed with exit code 1) until "
                                                    "2026-11-26 09:00 America/New_York")
        assert details["sync"]["waiting_since"].startswith("2026-11-25T22:00:0")  # its first probe, at 17:00
        assert details["export"]["reason"].endswith(", after sync")
    assert count_runs(root, "earnings") == ["2026-11-25"]  # the other job did not wait
    view = json.loads(project.cli("status", "--json", "--job", "flat", "--now", "2026-11-25T20:05").stdout)
    assert view["sessions"][0]["state"] == "waiting" and view["ok"] is True
    assert view["sessions"][0]["note"] == "sync, export wait for data: the next run probes again"
    (flat / "2026-11-25.csv").write_text("data")
    assert project.cli("run", "--now", "2026-11-25T20:10").output.startswith("flat: 2026-11-25: 2/2 tasks completed")
    assert project.cli("run", "--now", "2026-11-25T20:30").output == ""
    assert count_runs(root, "sync") == count_runs(root, "export") == ["2026-11-25"]
    done = doc(r, "maintenance:flat:status:2026-11-25")
    assert done["all_success"] is True and done["attempts"] == 1
    assert [c["outcome"] for c in done["cycles"]] == ["waiting for data", "completed"]  # one record of the waits
    # Friday (early close: the window is 14:00 to 06:00): the file never appears.
    for now in ("2026-11-27T14:05", "2026-11-27T20:00", "2026-11-28T02:00", "2026-11-28T05:55"):
        tick = project.cli("run", "--now", now)
        assert tick.exit_code == 0 and "flat" not in tick.output, (now, tick.output)
    late = project.cli("run", "--now", "2026-11-28T06:05")
    assert late.exit_code == 1, late.output
    assert "sync failed: still waiting for data after 16h (test failed with exit code 1); its wait ended at " \
           "2026-11-28 06:00 America/New_York" in late.stderr
    failed = doc(r, "maintenance:flat:status:2026-11-27")
    assert failed["tasks"] == {"sync": "failed", "export": "skipped"} and failed["attempts"] == 1
    assert count_runs(root, "sync") == ["2026-11-25"]


def test_wait_timeout_bounds_the_wait_from_the_first_probe(project, r):
    root = project.root
    project.write_config("[schedule]\nlookback_sessions = 1\n"
                         + job(root, "flat", "close+60m", minutes=960, tasks=("sync",),
                               task_extra=f'wait_for = ["test", "-e", "{root}/never"]\nwait_timeout = "90m"\n'))
    assert project.cli("run", "--now", "2026-11-25T17:30").output == ""
    assert project.cli("run", "--now", "2026-11-25T18:55").output == ""
    late = project.cli("run", "--now", "2026-11-25T19:05")
    assert late.exit_code == 1 and "still waiting for data after 1h35m" in late.stderr


def test_a_probe_that_hangs_is_stopped_and_means_not_yet_and_one_that_cannot_run_fails_the_task(project, r):
    """A probe is a task process: stopped at its task's timeout (at most 60 s), which means "not yet"; a probe
    whose program does not exist fails the task at once (no data will make it run)."""
    root = project.root
    project.write_config("[schedule]\nlookback_sessions = 1\n"
                         + job(root, "slow", "close+60m", minutes=960, tasks=("sync",),
                               task_extra='wait_for = ["sleep", "30"]\ntimeout = 1\n') + "\n"
                         + job(root, "broken", "close+60m", minutes=960, tasks=("load",),
                               task_extra='wait_for = ["/nonexistent/ready", "{date}"]\n'))
    tick = project.cli("run", "--now", "2026-11-25T17:05")
    assert tick.exit_code == 1 and count_runs(root, "sync") == count_runs(root, "load") == []
    assert tick.stderr.splitlines()[0].startswith("broken: 2026-11-25: 0/1 tasks completed")
    assert "load failed: its wait_for probe cannot run (command not found: /nonexistent/ready)" in tick.stderr
    waiting = doc(r, "maintenance:slow:status:2026-11-25")
    assert waiting["tasks"] == {"sync": "pending"} and waiting["attempts"] == 0
    assert waiting["task_details"]["sync"]["reason"].startswith("waits for data (its probe timed out after 1s)")


def test_a_stored_wait_or_time_out_of_range_is_read_as_no_time_never_a_crash(project, r):
    """`waiting_since` and `completed_at` as another writer may have left them: year 9999 or 1, which any wait
    or backoff added to them would overflow. Each command reads them as absent."""
    project.write_config("[schedule]\nlookback_sessions = 1\n"
                         + job(project.root, "flat", "close+60m", minutes=960, tasks=("sync",),
                               task_extra='wait_for = ["false"]\nwait_timeout = "1h"\n'))
    for moment in ("9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+00:00"):
        r.set("maintenance:flat:status:2026-11-25", json.dumps({
            "date": "2026-11-25", "started_at": moment, "completed_at": moment, "all_success": False, "attempts": 1,
            "tasks": {"sync": "failed"}, "task_details": {"sync": {"reason": "waits", "waiting_since": moment}}}))
        for command in (("run", "--dry-run"), ("status",), ("status", "--check"), ("status", "--date", "2026-11-25"),
                        ("status", "--grid"), ("recover", "--dry-run"), ("run",)):
            result = project.cli(*command, "--now", "2026-11-25T17:10")
            assert result.exit_code in (0, 1), (moment, command, result.output)


# --- 5. one command line for the whole day -----------------------------------------------------------------

def test_two_jobs_due_in_the_same_tick_both_run_once_each_under_its_own_lock(project, r):
    """Three cron processes at once: each job's task runs once. The top-level pipeline keeps its keys; the other
    job's live under `maintenance:other`. A lock held on one job does not stop the other."""
    root = project.root
    project.write_config("[schedule]\nwindow_start = \"close+60m\"\nlookback_sessions = 1\n" + task(root, "load")
                         + "\n" + job(root, "other", "close+60m"))
    procs = [project.spawn("run", "--now", "2026-11-25T17:05") for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert count_runs(root, "load") == count_runs(root, "other") == ["2026-11-25"]
    assert sorted(r.keys("*")) == [
        "maintenance:executed:2026-11-25", "maintenance:last_run", "maintenance:other:executed:2026-11-25",
        "maintenance:other:last_run", "maintenance:other:status:2026-11-25", "maintenance:status:2026-11-25"]
    legacy = doc(r, "maintenance:status:2026-11-25")  # the replaced service's fields, where it reads them
    assert legacy["date"] == "2026-11-25" and legacy["all_success"] is True and legacy["tasks"] == {"load": "completed"}
    assert r.get("maintenance:executed:2026-11-25") == "1" and r.get("maintenance:last_run") == "2026-11-25"
    # The next session: another run holds the top-level job's lock; the other job runs all the same.
    r.set("maintenance:lock", json.dumps({"host": "db1", "pid": 7, "since": "2026-11-27T19:00:00+00:00",
                                          "run_id": "feedface", "nonce": "n"}), px=60_000)
    tick = project.cli("run", "--now", "2026-11-27T14:05")
    assert tick.exit_code == 0 and tick.stdout == f"other: 2026-11-27: 1/1 tasks completed in {tick_seconds(tick)}s\n"
    assert count_runs(root, "load") == ["2026-11-25"] and count_runs(root, "other") == ["2026-11-25", "2026-11-27"]
    manual = project.cli("run", "--job", "maintenance", "--date", "2026-11-27", "--now", "2026-11-27T14:06")
    assert manual.exit_code == 75 and "another runner holds the lock (host db1, pid 7" in manual.stderr


def test_run_over_every_job_exits_with_the_worst_of_theirs_and_each_job_still_runs(project, r):
    """One job's task fails (1), another's state holds a key of the wrong type (78), a third is fine: each of
    them is tried in its turn, the failures are said with the job's name, and the exit code is 78."""
    root = project.root
    project.write_config("[schedule]\nlookback_sessions = 1\n"
                         '[jobs.failing]\n[[jobs.failing.tasks]]\nname = "boom"\ncommand = ["false"]\n'
                         + job(root, "wrongtype", "17:00") + "\n" + job(root, "fine", "17:00"))
    r.hset("maintenance:wrongtype:status:2026-11-25", "x", "y")
    tick = project.cli("run", "--now", "2026-11-25T17:05")
    assert tick.exit_code == 78, tick.output
    assert count_runs(root, "fine") == ["2026-11-25"] and count_runs(root, "wrongtype") == []
    assert "failing: 2026-11-25: 0/1 tasks completed" in tick.stderr and "boom failed" in tick.stderr
    assert "tradeul-maint: wrongtype: " in tick.stderr and "maintenance:wrongtype:status:2026-11-25" in tick.stderr
    assert tick.stdout.startswith("fine: 2026-11-25: 1/1 tasks completed")


def test_a_job_decides_when_its_turn_comes_so_one_whose_window_ended_meanwhile_is_not_started_late(project, r):
    """04:14:59: the first job's task takes a second and more; by the time the pre-open job's turn comes, its
    window (03:45-04:15, catchup = "none") has ended: it is expired, not started at 04:15:01."""
    root = project.root
    script = f'sleep 1.2; echo "$1" >> {root}/slow.count'
    project.write_config("[schedule]\nlookback_sessions = 1\n"
                         '[jobs.first]\nwindow_start = "04:00"\n[[jobs.first.tasks]]\nname = "slow"\n'
                         f'command = ["/bin/sh", "-c", {json.dumps(script)}, "sh", "{{date}}"]\n'
                         + job(root, "premarket", "open-5h45m", catchup="none"))
    assert due(project.cli("run", "--dry-run", "--now", "2026-11-25T04:14:59").stdout) == {
        ("first", "2026-11-25"), ("premarket", "2026-11-25")}
    tick = project.cli("run", "--now", "2026-11-25T04:14:59")
    assert tick.exit_code == 0 and count_runs(root, "slow") == ["2026-11-25"], tick.output
    assert count_runs(root, "premarket") == [] and "premarket" not in tick.output


def tick_seconds(result) -> str:
    return re.search(r"in (\d+\.\d)s", result.stdout)[1]


def test_status_check_logs_metrics_and_pings_cover_every_job(project, r):
    root = project.root
    with_pings = serve(Recorder)
    url, seen = next(with_pings)
    (root / "metrics").mkdir()
    project.write_config(f'[schedule]\nlookback_sessions = 1\n[metrics]\ntextfile = "metrics/m.prom"\n'
                         f'[notify]\nping_url = "{url}"\n' + task(root, "load") + "\n"
                         + job(root, "night", "close+60m", extra=f'[jobs.night.notify]\nping_url = "{url}/night"\n'))
    assert project.cli("run", "--now", "2026-11-25T17:05").exit_code == 0
    assert sorted(path for _, path, _ in seen) == sorted(["/ping/5f0c2a9e/start", "/ping/5f0c2a9e",
                                                          "/ping/5f0c2a9e/night/start", "/ping/5f0c2a9e/night"])
    next(with_pings, None)
    metrics = (root / "metrics" / "m.prom").read_text()
    assert 'tradeul_maint_task_success{maint_job="maintenance",task="load"} 1' in metrics
    assert 'tradeul_maint_task_success{maint_job="night",task="night"} 1' in metrics
    assert 'tradeul_maint_sessions_not_done{maint_job="night",state="expired"} 0' in metrics
    view = json.loads(project.cli("status", "--json", "--now", "2026-11-25T18:00").stdout)
    assert [(j["job"], j["ok"]) for j in view["jobs"]] == [("maintenance", True), ("night", True)]
    assert view["ok"] is True and view["not_done"] == []
    r.delete("maintenance:night:status:2026-11-25")
    check = project.cli("status", "--check", "--now", "2026-11-25T18:00")
    assert check.exit_code == 1 and check.stdout.splitlines()[0] == "NOT OK: 1 of 2 jobs: night"
    logs = project.cli("logs", "--job", "night", "--json").stdout.splitlines()
    assert logs and all(json.loads(line).get("job") == "night" for line in logs)
    checked = project.cli("check", "--now", "2026-11-25T18:00")
    assert checked.exit_code == 0, checked.output
    lines = checked.stdout.splitlines()
    assert "✓ ok   night plan: window close+60m for 30 min, missed sessions caught up oldest first; night: every " \
           "session" in lines
    assert not [line for line in lines if line.startswith("! warn pings")]


def test_what_a_python_task_logs_is_its_jobs(project, r):
    """`logs --job NAME` finds the lines a job's Python task wrote with ctx.logger (bound in its own process)."""
    (project.root / "night_task.py").write_text("def run(ctx):\n    ctx.logger.info('night_event')\n")
    project.write_config("[schedule]\nlookback_sessions = 1\n" + task(project.root, "load") + "\n"
                         '[jobs.night]\n[[jobs.night.tasks]]\nname = "py"\npython = "night_task:run"\n')
    assert project.cli("run", "--now", "2026-11-25T17:05").exit_code == 0
    night = project.cli("logs", "--job", "night", "--json", "-n", "500").stdout.splitlines()
    assert any(json.loads(line).get("task") == "py" and "night_event" in line for line in night), night
    top = project.cli("logs", "--job", "maintenance", "--json", "-n", "500").stdout
    assert "night_event" not in top and '"load"' in top


def test_the_cron_tick_reads_every_jobs_states_in_one_round_trip(project, r):
    """Six jobs, nothing due: the tick (the console script's quick path) prints nothing and sends one MGET."""
    root = project.root
    forms = ["17:00", "open-5h45m", "open+30m", "close+60m", "close-15m", "01:00"]
    project.write_config("[schedule]\nlookback_sessions = 2\n" + "\n".join(
        job(root, f"j{i}", form, catchup="none") for i, form in enumerate(forms)))
    r.config_resetstat()
    tick = project.run("-q", "run", "--now", "2026-11-28T12:00")  # a Saturday: every window has passed
    assert (tick.returncode, tick.stdout, tick.stderr) == (0, "", "")
    stats = r.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1
    handshake = {"cmdstat_info", "cmdstat_hello", "cmdstat_ping", "cmdstat_client", "cmdstat_client|setinfo"}
    assert set(stats) - handshake - {"cmdstat_config", "cmdstat_config|resetstat"} == {"cmdstat_mget"}, stats


# --- settings ----------------------------------------------------------------------------------------------

TASK = '[[jobs.a.tasks]]\nname = "t"\ncommand = ["true"]\n'


@pytest.mark.parametrize("config, message", [
    ('[jobs.maintenance]\n', "[jobs.maintenance]: 'maintenance' is reserved"),
    ('[jobs.lock]\n', "[jobs.lock]: 'lock' is reserved"),
    ('[jobs.Pre]\n', "[jobs.Pre]: a job name is lowercase letters, digits, '_' or '-'"),
    ('[jobs.a]\nwindow_start = "open-25h"\n' + TASK, "[jobs.a] window_start = 'open-25h': an offset from the open "
                                                       "must be within 24 hours"),
    ('[jobs.a]\nwindow_start = "open+5"\n' + TASK, "[jobs.a] window_start = 'open+5': expected a local time like"),
    ('[jobs.a]\nwindow_start = "close+99999999999999999999h"\n' + TASK, "an offset from the close must be within 24"),
    ('[jobs.a]\ndeadline_minutes = 9223372036854775807\n' + TASK, "[jobs.a] deadline_minutes = 9223372036854775807:"
                                                                   " must be at most 527040"),
    (TASK + 'wait_for = ["true"]\nwait_timeout = 1e300\n', "[jobs.a.tasks.t] wait_timeout = 1e+300: must be at "
                                                           "most 31622400 seconds (366 days)"),
    ('[jobs.a]\ncatchup = "some"\n' + TASK, "[jobs.a] catchup = 'some': expected \"all\""),
    ('[jobs.a]\ncalendar = "XLON"\n' + TASK, "unknown key 'calendar' in [jobs.a]"),
    ('[jobs.a]\nkey_prefix = "maintenance"\n' + TASK, "jobs 'maintenance' and 'a' have the same key prefix"),
    ('[jobs.a]\nwindow_start = "01:00"\n', "[jobs.a] has no tasks"),
    (TASK + 'wait_timeout = "1h"\n', "[jobs.a.tasks.t] wait_timeout without wait_for"),
    (TASK + 'wait_for = "test -e x"\n', "[jobs.a.tasks.t] wait_for must be a non-empty list of strings"),
    ('[[jobs.a.tasks]]\nname = "t"\nbuiltin = "redis.delete_keys"\nparams = { patterns = ["maintenance:*"] }\n',
     "[jobs.a.tasks.t] params.patterns: 'maintenance:*' would delete this tool's own state"),
])
def test_a_job_that_is_not_one_is_a_config_error_naming_it(project, config, message):
    project.write_config(task(project.root, "load") + "\n" + config)
    result = project.cli("run", "--dry-run")
    assert result.exit_code == 78 and message in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_an_unknown_job_is_a_usage_error(project):
    project.write_config(task(project.root, "load"))
    result = project.cli("status", "--job", "premarket")
    assert result.exit_code == 2 and "unknown job 'premarket': configured jobs are maintenance" in result.stderr


def test_the_example_of_every_phase_of_the_trading_day_checks(project):
    """examples/phases.toml: ten jobs, one cron line; `check` passes (its probe and stand-ins are on PATH)."""
    checked = project.cli("--config", str(REPO / "examples" / "phases.toml"), "check", "--now", "2026-11-25T12:00")
    assert checked.exit_code == 0, checked.output
    assert "10 jobs" in checked.stdout.splitlines()[1]
