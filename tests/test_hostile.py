"""A task never runs twice at the same time, however the runner is stopped: signals, SIGKILL, timeouts.

Each task appends to a ledger with O_APPEND: `start`, `tick` lines while it works, `end`, each
with its pid and time, so overlapping executions show in the file; /proc shows what survived.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import processes_running, wait_for

from tradeul_maint.base import proc

pytestmark = pytest.mark.slow

DAY = "2026-11-25"
# A short grace period keeps these trials quick; the mechanism is the same at the default 10 s.
QUIET = "[schedule]\nauto_recover = false\n[run]\nstop_grace_seconds = 2\n"

# A task that ignores SIGTERM and leaves a grandchild in its group: `sh` and its `sleep`.
STUBBORN = """
import os, signal, subprocess, sys, time
ledger = sys.argv[1]
def note(what):
    with open(ledger, "a") as f:
        f.write(f"{what} {os.getpid()} {time.time():.3f}\\n")
signal.signal(signal.SIGTERM, signal.SIG_IGN)
note("start")
child = subprocess.Popen(["sleep", "61"])  # a grandchild in the task's group; SIGTERM ends it
with open(ledger + ".child", "w") as f:
    f.write(str(child.pid))
for _ in range(int(float(sys.argv[2]) * 10)):
    note("tick")
    time.sleep(0.1)
note("end")
"""


def stubborn_task(root: Path, name: str = "stubborn", seconds: float = 60, extra: str = "") -> str:
    script = root / "stubborn.py"
    script.write_text(STUBBORN)
    return (f'[[tasks]]\nname = "{name}"\ncommand = ["{sys.executable}", "{script}", "{root / "ledger"}", '
            f'"{seconds}"]\n{extra}\n')


def ledger(root: Path) -> list[tuple[str, int, float]]:
    path = root / "ledger"
    lines = path.read_text().split("\n") if path.exists() else []
    return [(what, int(pid), float(at)) for what, pid, at in (line.split() for line in lines if line)]


def attempts(root: Path) -> list[tuple[int, float, float]]:
    """Per process: (pid, first line, last line) of the ledger."""
    spans: dict[int, list[float]] = {}
    for _, pid, at in ledger(root):
        spans.setdefault(pid, []).append(at)
    return [(pid, min(times), max(times)) for pid, times in spans.items()]


def assert_no_overlap(root: Path) -> None:
    spans = sorted(attempts(root), key=lambda span: span[1])
    for (pid_a, _, end_a), (pid_b, start_b, _) in zip(spans, spans[1:]):
        assert end_a < start_b, f"pid {pid_b} started at {start_b} while pid {pid_a} still ran until {end_a}"


alive = proc.alive


def task_processes(root: Path) -> list[int]:
    found = processes_running(str(root / "stubborn.py"))
    child = root / "ledger.child"
    if child.exists() and alive(int(child.read_text())):
        found.append(int(child.read_text()))
    return found


def status(r) -> dict:
    return json.loads(r.get(f"maintenance:status:{DAY}"))


def watch_lock_while_stopping(r, runner, root: Path) -> list[tuple[bool, bool]]:
    """Samples of (lock held, a task process alive) until the runner exits."""
    samples = []
    while runner.poll() is None:
        samples.append((r.get("maintenance:lock") is not None, bool(task_processes(root))))
        time.sleep(0.05)
    samples.append((r.get("maintenance:lock") is not None, bool(task_processes(root))))
    return samples


@pytest.mark.parametrize("sig, code, command", [(signal.SIGTERM, 143, "run"), (signal.SIGHUP, 129, "recover")])
def test_a_task_that_ignores_sigterm_is_killed_before_the_lock_is_released(project, r, sig, code, command):
    """Issue 10, cases 1 and 2: SIGTERM escalates to SIGKILL of the whole group; SIGHUP is handled alike."""
    project.write_config(QUIET + stubborn_task(project.root))
    args = ("run", "--date", DAY) if command == "run" else ("recover", "--since", DAY, "--until", DAY)
    runner = project.spawn(*args)
    assert wait_for(lambda: any(what == "tick" for what, _, _ in ledger(project.root)))
    runner.send_signal(sig)
    samples = watch_lock_while_stopping(r, runner, project.root)
    _, err = runner.communicate()
    assert runner.returncode == code, err
    assert f"stopped by {sig.name}" in err
    assert not task_processes(project.root)  # sh, python and the grandchild sleep: all gone
    # The lock was never free while a process of the task was alive.
    assert not [s for s in samples if not s[0] and s[1]], samples
    assert samples[-1] == (False, False)
    doc = status(r)
    assert doc["tasks"] == {"stubborn": "failed"} and doc["interrupted"] == sig.name
    assert doc["task_details"]["stubborn"]["error"] == f"interrupted by {sig.name}"

    # The next run starts a fresh copy, never beside the old one.
    project.write_config(QUIET + stubborn_task(project.root, seconds=0.3))
    assert project.run("run", "--date", DAY).returncode == 0
    assert_no_overlap(project.root)


def test_a_runner_killed_with_sigkill_leaves_no_task_running(project, r):
    """Issue 10, case 3: the supervisor stops the dead runner's tasks before its lease can pass on."""
    config = QUIET + "[redis]\nlock_lease_seconds = 3\n"
    project.write_config(config + stubborn_task(project.root))
    runner = project.spawn("run", "--date", DAY)
    assert wait_for(lambda: any(what == "tick" for what, _, _ in ledger(project.root)))
    runner.send_signal(signal.SIGKILL)
    runner.communicate(timeout=10)
    # Gone (SIGTERM ignored, so SIGKILL) before the lease of 3 s could let another runner in: while any
    # process of the task is alive, the dead runner's lock is still there.
    samples = [(True, True)]
    while samples[-1][1]:  # (the lock held, then: a task process alive)
        samples.append((r.get("maintenance:lock") is not None, bool(task_processes(project.root))))
    assert not [s for s in samples if not s[0] and s[1]], samples
    project.write_config(config + stubborn_task(project.root, seconds=0.3))
    assert wait_for(lambda: r.get("maintenance:lock") is None, 10)
    result = project.run("run", "--date", DAY)
    assert result.returncode == 0, result.stderr
    assert_no_overlap(project.root)
    assert status(r)["tasks"] == {"stubborn": "completed"}


def test_when_runner_and_supervisor_are_both_killed_the_reapers_stop_the_tasks(project, r):
    """Issue 10, case 3: each attempt's reaper outlives its supervisor just long enough to stop its attempt."""
    config = QUIET + "[redis]\nlock_lease_seconds = 2\n"
    project.write_config(config + stubborn_task(project.root))
    runner = project.spawn("run", "--date", DAY)
    assert wait_for(lambda: any(what == "tick" for what, _, _ in ledger(project.root)))
    supervisors = [s.pid for s in proc.table().values() if s.ppid == runner.pid]
    assert supervisors
    for pid in [runner.pid, *supervisors]:
        os.kill(pid, signal.SIGKILL)
    runner.communicate(timeout=10)
    grandchild = int((project.root / "ledger.child").read_text())
    # SIGTERM ignored: SIGKILL after the grace period (2 s), with nobody left above the reaper to ask it.
    assert wait_for(lambda: not task_processes(project.root) and not alive(grandchild), 10)
    assert wait_for(lambda: r.get("maintenance:lock") is None, 10)
    project.write_config(config + stubborn_task(project.root, seconds=0.3))
    result = project.run("run", "--date", DAY)
    assert result.returncode == 0, result.stderr
    assert_no_overlap(project.root)


def test_a_timed_out_python_task_is_stopped_before_its_retry_starts(project, r):
    """Issue 10, case 4: a sync Python task that ignores SIGTERM is killed, not abandoned in a thread."""
    (project.root / "hangs.py").write_text(textwrap.dedent(f"""
        import os, signal, time

        def run(ctx):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # even this does not keep it alive
            while True:
                with open({str(project.root / "ledger")!r}, "a") as f:
                    f.write(f"tick {{os.getpid()}} {{time.time():.3f}}\\n")
                time.sleep(0.1)
    """))
    project.write_config(QUIET + '[[tasks]]\nname = "hangs"\npython = "hangs:run"\ntimeout = 1\nretries = 1\n'
                                 'retry_delay = 0.1\n')
    started = time.monotonic()
    result = project.run("run", "--date", DAY, timeout=90)
    assert result.returncode == 1
    assert len(attempts(project.root)) == 2  # two attempts, each in its own process
    assert_no_overlap(project.root)
    assert not any(alive(pid) for pid, _, _ in attempts(project.root))
    detail = status(r)["task_details"]["hangs"]
    assert detail["error"] == "timed out after 1s" and detail["attempts"] == 2
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_signal_while_the_last_task_runs_exits_with_the_signal_code(project, r, sig, code):
    """Issue 10, case 16: the exit code does not depend on whether other tasks were still pending."""
    project.write_config(QUIET + stubborn_task(project.root, name="only", seconds=60).replace(
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)", ""))
    (project.root / "stubborn.py").write_text(STUBBORN.replace("signal.signal(signal.SIGTERM, signal.SIG_IGN)", ""))
    runner = project.spawn("run", "--date", DAY)
    assert wait_for(lambda: any(what == "tick" for what, _, _ in ledger(project.root)))
    runner.send_signal(sig)
    _, err = runner.communicate(timeout=30)
    assert runner.returncode == code, err
    doc = status(r)
    assert doc["tasks"] == {"only": "failed"} and doc["interrupted"] == sig.name
    assert doc["task_details"]["only"]["error"] == f"interrupted by {sig.name}"
    assert r.get("maintenance:lock") is None
