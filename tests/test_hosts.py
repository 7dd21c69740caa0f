"""Hosts that disagree: clocks minutes apart, and task lists that differ, against one Redis.

The lease lives on the Redis server's clock (SET PX, PEXPIRE), so a host's clock never
shortens or lengthens another's lock; the window is decided on each host's own clock, so a
host whose clock is off by k minutes opens and closes the window k minutes off. Each cycle
records its host's task list; `status` and `check` say where this host's differs, and a
session another host completed stays done for a host with an extra task (`run --date D
--task NAME` runs it for D).
"""

from __future__ import annotations

import json
import socket

from conftest import count_runs, marker_tasks, wait_for

DAY = "2026-11-25"  # window 17:00-17:30 New York
QUIET = "[schedule]\nauto_recover = false\n"


# --- clocks -------------------------------------------------------------------------------------------


def test_a_host_whose_clock_is_behind_opens_and_closes_the_window_that_much_later(project, r):
    """Host B's clock is 4 minutes behind host A's: B's window edges are 4 minutes later, the session runs once."""
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    # Real time 17:02: A is inside the window; B reads 16:58 and has nothing to do yet.
    assert project.cli("run", "--now", f"{DAY}T16:58").exit_code == 0
    assert count_runs(project.root, "a", "started") == []
    assert project.cli("run", "--now", f"{DAY}T17:02").exit_code == 0
    assert count_runs(project.root, "a") == [DAY]
    # Real time 17:04: B reads 17:00, its window opens, and the session is done.
    later = project.cli("run", "--now", f"{DAY}T17:00")
    assert (later.exit_code, later.stdout) == (0, "") and count_runs(project.root, "a", "started") == [DAY]


def test_a_host_behind_still_starts_a_session_after_the_real_window_end(project, r):
    """Nobody ran the session in the window; at real 17:33 host A is past it, host B (4 minutes behind) is not."""
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    assert project.cli("run", "--now", f"{DAY}T17:33").exit_code == 0  # A: the window has closed
    assert count_runs(project.root, "a", "started") == []
    assert project.cli("run", "--now", f"{DAY}T17:29").exit_code == 0  # B: 17:29 on its clock
    assert count_runs(project.root, "a") == [DAY]


def test_the_lease_is_on_the_servers_clock_not_the_hosts(project, r):
    """A holds the lock (its clock reads 17:01); B's clock reads 28 minutes later, far past A's 2 s lease as
    its own clock would count it: B still finds the lock held, and every task runs once."""
    project.write_config(QUIET + "[redis]\nlock_lease_seconds = 2\n"
                         + marker_tasks(project.root, ["a", "b"], sleep={"a": 2.5}, deps={"b": ["a"]}))
    first = project.spawn("run", "--now", f"{DAY}T17:01")
    assert wait_for(lambda: count_runs(project.root, "a", "started"), 20)
    for clock in ("17:05", "17:29"):
        other = project.cli("run", "--now", f"{DAY}T{clock}")
        assert (other.exit_code, other.stdout, other.stderr) == (0, "", "")  # cron: another run holds the lock
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert count_runs(project.root, "a") == [DAY] and count_runs(project.root, "b") == [DAY]
    doc = json.loads(r.get(f"maintenance:status:{DAY}"))
    assert doc["started_at"].startswith(f"{DAY}T22:01") and doc["all_success"] is True  # the winner's clock


# --- task lists ---------------------------------------------------------------------------------------


def checked(project) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(project.cli("check", "--json", "--now", f"{DAY}T18:00").stdout)["checks"]}


def other_host(r, day: str = DAY) -> None:
    """Make the stored document say its latest cycle ran on another host (tests run on one machine)."""
    doc = json.loads(r.get(f"maintenance:status:{day}"))
    doc["runner"] = "host-a:4242"
    r.set(f"maintenance:status:{day}", json.dumps(doc), keepttl=True)


def test_a_host_with_an_extra_task_leaves_a_session_another_host_completed_done(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    assert project.cli("run", "--now", f"{DAY}T17:02").exit_code == 0  # host A, without `late`
    other_host(r)
    assert json.loads(r.get(f"maintenance:status:{DAY}"))["task_list"].keys() == {"a"}
    project.write_config(QUIET + marker_tasks(project.root, ["a", "late"]))  # host B
    tick = project.cli("run", "--now", f"{DAY}T17:05")
    assert (tick.exit_code, tick.stdout) == (0, "") and count_runs(project.root, "late", "started") == []

    view = json.loads(project.cli("status", "--json", "--date", DAY, "--now", f"{DAY}T17:06").stdout)
    [session] = view["sessions"]
    assert session["state"] == "done"
    assert session["task_list_differences"] == [{"task": "late", "how": "configured only here"}]
    assert session["note"] == (f"ran with another task list (host host-a): late configured only here (done without "
                               f"it: run --date {DAY} --task late runs it)")
    shown = project.cli("status", "--now", f"{DAY}T17:06")
    assert "ran with another task list (host host-a): late configured only here" in shown.stdout

    ran = project.cli("run", "--date", DAY, "--task", "late", "--now", f"{DAY}T17:07")
    assert ran.exit_code == 0, ran.output
    assert count_runs(project.root, "late") == [DAY] and count_runs(project.root, "a") == [DAY]
    doc = json.loads(r.get(f"maintenance:status:{DAY}"))
    assert doc["all_success"] is True and doc["task_list"].keys() == {"a", "late"}


def test_status_and_check_say_where_this_hosts_task_list_differs_task_by_task(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b", "gone"]))
    assert project.cli("run", "--date", DAY).exit_code == 0
    other_host(r)
    # This host: `a` as before, `b` with another command, `gone` removed, `new` added.
    tasks = marker_tasks(project.root, ["a", "new"]) + marker_tasks(project.root, ["b"], sleep=1)
    project.write_config(QUIET + tasks)
    expected = [{"task": "new", "how": "configured only here"}, {"task": "b", "how": "defined differently"},
                {"task": "gone", "how": "configured only there"}]
    view = json.loads(project.cli("status", "--json", "--now", f"{DAY}T18:00").stdout)
    assert view["sessions"][0]["task_list_differences"] == expected
    checks = checked(project)
    assert checks["task list"] == {
        "name": "task list", "ok": True, "warning": True,
        "detail": f"the cycle of {DAY} (completed) ran with another task list (host host-a): new configured only "
                  "here; b defined differently; gone configured only there: roll one configuration out to every host"}


def test_check_accepts_a_task_list_changed_on_this_host_since_the_last_cycle(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    assert project.cli("run", "--date", DAY).exit_code == 0
    checks = checked(project)
    assert checks["task list"]["ok"] and checks["task list"]["detail"] == (
        f"the same as the cycle of {DAY} (completed, host {socket.gethostname()})")
    project.write_config(QUIET + marker_tasks(project.root, ["a", "new"]))
    checks = checked(project)
    assert checks["task list"] == {"name": "task list", "ok": True, "warning": False,
                                   "detail": f"changed here since the cycle of {DAY} (completed): new configured "
                                             "only here"}


def test_status_says_a_running_cycle_runs_with_another_task_list(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a"], sleep=30))
    runner = project.spawn("run", "--date", DAY)
    try:
        assert wait_for(lambda: count_runs(project.root, "a", "started"), 20)
        project.write_config(QUIET + marker_tasks(project.root, ["a", "b"], sleep=30))
        [session] = json.loads(project.cli("status", "--json", "--date", DAY, "--now", f"{DAY}T18:00").stdout)[
            "sessions"]
        assert session["state"] == "running"
        assert session["note"] == f"runs with another task list (host {socket.gethostname()}): b configured only here"
    finally:
        runner.terminate()
        runner.communicate(timeout=30)
