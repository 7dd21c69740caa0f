"""Real processes: overlapping runs, crashes, a paused runner, signals, and an unreachable Redis."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import count_runs, marker_tasks, processes_running, wait_for

pytestmark = pytest.mark.slow

DAY = "2026-11-25"
QUIET = "[schedule]\nauto_recover = false\n"


def kill_tasks_of(root: Path) -> None:
    """What a crashed pod's kernel would do: kill the task processes the dead runner left."""
    for pid in processes_running(str(root / "marker.py")):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def status(r, day=DAY):
    return json.loads(r.get(f"maintenance:status:{day}"))


@pytest.mark.parametrize("trial", range(2))  # more in bench/faults.py (the overlap trials)
def test_twelve_concurrent_runs_execute_each_task_exactly_once(project, r, trial):
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b", "c"], deps={"c": ["a", "b"]}, sleep=0.2))
    procs = [project.spawn("run", "--now", "2026-11-25T17:05") for _ in range(12)]
    results = [(p.wait(60), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0] * 12, results
    assert sum("tasks completed" in out for _, out, _ in results) == 1  # the others found it busy or done
    for name in ("a", "b", "c"):
        assert count_runs(project.root, name, "started") == [DAY], name
    assert status(r)["all_success"] is True and status(r)["attempts"] == 1


def test_sigkill_mid_task_then_a_later_run_completes_without_rerunning_completed_tasks(project, r):
    config = QUIET + "[redis]\nlock_lease_seconds = 1\n"
    project.write_config(config + marker_tasks(project.root, ["a", "b", "c"], sleep={"b": 30}))
    runner = project.spawn("run", "--date", DAY)
    assert wait_for(lambda: count_runs(project.root, "b", "started"))
    runner.send_signal(signal.SIGKILL)
    runner.communicate(timeout=10)
    kill_tasks_of(project.root)
    assert status(r)["tasks"] == {"a": "completed", "b": "in_progress", "c": "pending"}

    project.write_config(config + marker_tasks(project.root, ["a", "b", "c"]))
    assert wait_for(lambda: r.get("maintenance:lock") is None, 5)  # the dead runner's lease ran out
    result = project.run("run", "--date", DAY)
    assert result.returncode == 0, result.stderr
    assert count_runs(project.root, "a", "started") == [DAY]  # not re-run
    assert count_runs(project.root, "b") == [DAY] and count_runs(project.root, "c") == [DAY]
    doc = status(r)
    assert doc["all_success"] is True and doc["attempts"] == 2
    assert "interrupted_task_detected" in (project.log_dir / "maintenance.log").read_text()


def test_runner_paused_past_its_lease_has_its_tasks_stopped_and_cannot_overwrite_the_new_runner_state(project, r):
    project.write_config(QUIET + "[redis]\nlock_lease_seconds = 1\n"
                         + marker_tasks(project.root, ["a", "b"], sleep={"a": 2}))
    old = project.spawn("run", "--date", DAY)
    assert wait_for(lambda: count_runs(project.root, "a", "started"))
    old.send_signal(signal.SIGSTOP)
    try:
        assert wait_for(lambda: r.get("maintenance:lock") is None, 5)  # its lease expired
        new = project.run("run", "--date", DAY)
        assert new.returncode == 0, new.stderr
        after_new = r.get(f"maintenance:status:{DAY}")
        assert json.loads(after_new)["all_success"] is True
        # The paused runner's supervisor stopped its task before the lease ran out: it never completed
        # beside the new runner's.
        assert count_runs(project.root, "a", "started") == [DAY, DAY]
        assert count_runs(project.root, "a") == [DAY]
        assert not processes_running(str(project.root / "marker.py"))
    finally:
        old.send_signal(signal.SIGCONT)
    code = old.wait(30)
    _, err = old.communicate()
    assert code == 75, err
    assert "lost the run lock" in err
    assert r.get(f"maintenance:status:{DAY}") == after_new  # nothing overwritten
    assert count_runs(project.root, "b", "started") == [DAY]  # the old runner started nothing more


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_the_task_group_records_it_and_releases_the_lock(project, r, sig, code):
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b", "c"], sleep={"b": 30}))
    runner = project.spawn("run", "--date", DAY)
    assert wait_for(lambda: count_runs(project.root, "b", "started"))
    started = time.monotonic()
    runner.send_signal(sig)
    assert runner.wait(15) == code
    assert time.monotonic() - started < 10
    _, err = runner.communicate()
    assert "stopped by SIG" in err
    doc = status(r)
    assert doc["tasks"] == {"a": "completed", "b": "failed", "c": "pending"}
    assert doc["task_details"]["b"]["error"] == f"interrupted by {signal.Signals(sig).name}"
    assert doc["interrupted"] == signal.Signals(sig).name and doc["completed_at"] is None
    assert r.get("maintenance:lock") is None
    assert count_runs(project.root, "b") == []  # its process was stopped, not left to finish
    assert wait_for(lambda: not processes_running(str(project.root / "marker.py")), 5)


def test_manual_run_while_another_holds_the_lock_exits_75_naming_the_holder(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a"], sleep=30))
    runner = project.spawn("run", "--date", DAY)
    try:
        assert wait_for(lambda: count_runs(project.root, "a", "started"))
        manual = project.run("run", "--date", "2026-11-24")
        assert manual.returncode == 75
        assert "another runner holds the lock" in manual.stderr and f"pid {runner.pid}" in manual.stderr
        cron = project.run("run", "--now", "2026-11-24T17:05")
        assert cron.returncode == 0 and cron.stdout == "" and cron.stderr == ""
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.communicate(timeout=15)


def test_unreachable_redis_exits_75_quickly_and_runs_nothing(project):
    project.write_config(marker_tasks(project.root, ["a"]))
    started = time.monotonic()
    result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL="redis://:hunter2@127.0.0.1:1/0")
    assert result.returncode == 75
    assert time.monotonic() - started < 8
    assert "unreachable" in result.stderr and "hunter2" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
    assert count_runs(project.root, "a", "started") == []


def test_redis_that_accepts_but_never_answers_exits_75_within_seconds(project):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(server.accept()) for _ in range(16)], daemon=True).start()
    project.write_config(marker_tasks(project.root, ["a"]))
    started = time.monotonic()
    result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=f"redis://127.0.0.1:{server.getsockname()[1]}/0")
    elapsed = time.monotonic() - started
    server.close()
    assert result.returncode == 75, result.stderr
    assert elapsed < 10
    assert count_runs(project.root, "a", "started") == []


RUNNER_DIES_WITH_STARTS_UNREAD = """
import datetime as dt, socket, sys
from multiprocessing.connection import Connection
from tradeul_maint.run.messages import AttemptId, CommandRequest, Start
from tradeul_maint.run.supervisor.attempt import Shared
from tradeul_maint.run.supervisor.server import Supervisor
a, b = socket.socketpair()
runner, end = Connection(a.detach()), Connection(b.detach())
for i in range(2):
    runner.send(Start(AttemptId(dt.date(2026, 11, 25), f"t{i}", 1), CommandRequest(("sleep", sys.argv[1]))))
runner.close()
Supervisor(end, Shared("x", None, 1, None, None, None, None, None, False)).serve()
print("served")
"""


def test_a_supervisor_whose_runner_died_with_starts_unread_stops_its_tasks_and_ends(tmp_path):
    """The first start's reply fails (the runner is gone), then the read of the unread start meets the end of
    the stream: both say the runner died, and the second must not crash the supervisor before it stops the
    tasks (in a process of its own: a supervisor kills every descendant when it ends)."""
    marker = "31.4159"  # a sleep nobody else runs
    result = subprocess.run([sys.executable, "-c", RUNNER_DIES_WITH_STARTS_UNREAD, marker], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "served", result.stderr
    assert "Traceback" not in result.stderr
    assert wait_for(lambda: not processes_running(f"sleep {marker}"), 5)
