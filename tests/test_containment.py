"""No process a task starts outlives its attempt, whatever it does: leave its group, stop its parents, or
survive a double kill with a reset environment.

Each task and each worker it leaves behind appends lines to a ledger (O_APPEND, one write a
line): `start N` when the task starts for the Nth time (a retry, or the next session's
cycle), `worker N PID` every 20 ms from a worker that start N left running (it ignores
SIGTERM), `dependent` when a dependent starts. The order of the lines is the evidence: no worker line may follow the start of what must not
run beside it. The tests read the ledger, the record the run keeps (run/containment.py) and
/proc; none waits on a wall-clock interval to judge.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import wait_for

from tradeul_maint.base import proc
from tradeul_maint.run import containment

pytestmark = pytest.mark.slow

DAY = "2026-11-25"
HEAD = "[schedule]\nauto_recover = false\n[run]\nstop_grace_seconds = 0.5\n"

# A worker left running: it ignores SIGTERM, so only SIGKILL (or its absence) decides.
WORKER = """
import os, signal, sys, time
ledger, attempt = sys.argv[1], sys.argv[2]
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"worker {attempt} {os.getpid()}\\n".encode())
    os.close(fd)
    time.sleep(0.02)
"""

# A command task: attempt 1 leaves a worker (how: setsid, double-fork, env-i) and exits with CODE.
TASK = """
import os, subprocess, sys, time
ledger, how, code, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
worker = os.path.join(os.path.dirname(ledger), "worker.py")
def note(text):
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (text + "\\n").encode())
    os.close(fd)
def lines():
    return open(ledger).read().splitlines() if os.path.exists(ledger) else []
n = 1 + sum(line.startswith("start ") for line in lines())
note(f"start {n}")
if n == 1:
    if how == "setsid":
        subprocess.Popen(["setsid", sys.executable, worker, ledger, "1"])
    elif how == "env-i":
        subprocess.Popen(["setsid", "env", "-i", sys.executable, worker, ledger, "1"])
    elif os.fork() == 0:  # double fork, the grandchild in a session of its own
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, worker, ledger, "1"])
        os._exit(0)
    while not any(line.startswith("worker 1 ") for line in lines()):
        time.sleep(0.01)
    time.sleep(pause)
    sys.exit(code)
time.sleep(0.2)  # a later attempt lingers: a worker running beside it would write meanwhile
"""

DEPENDENT = ('import os, sys, time; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND); os.write(fd, b"dependent\\n"); '
             'time.sleep(0.2)')  # it lingers, as a later attempt does


def task(root: Path, name: str, how: str, code: int, pause: float = 0.0, extra: str = "") -> str:
    (root / "worker.py").write_text(WORKER)
    (root / "task.py").write_text(TASK)
    argv = [sys.executable, str(root / "task.py"), str(root / "ledger"), how, str(code), str(pause)]
    return f'[[tasks]]\nname = "{name}"\ncommand = {json.dumps(argv)}\n{extra}\n'


def ledger(root: Path) -> list[str]:
    path = root / "ledger"
    return path.read_text().splitlines() if path.exists() else []


def assert_no_worker_after(lines: list[str], marker: str) -> None:
    """`marker` was written, no worker wrote after it, and no worker is alive now."""
    assert marker in lines, lines[-5:]
    late = [line for line in lines[lines.index(marker) + 1:] if line.startswith("worker")]
    assert not late, f"{len(late)} worker lines after {marker!r}, e.g. {late[0]}"
    assert not [pid for pid in workers(lines) if proc.alive(pid)]


def workers(lines: list[str]) -> set[int]:
    return {int(line.split()[2]) for line in lines if line.startswith("worker ")}


def kill(pids) -> None:
    proc.signal_all(list(pids), signal.SIGKILL)


@pytest.mark.parametrize("how", ["setsid", "double-fork"])
def test_an_escaped_worker_of_a_failed_attempt_writes_nothing_after_the_retry_starts(project, r, how):
    project.write_config(HEAD + task(project.root, "a", how, code=1, extra="retries = 1\nretry_delay = 0.01"))
    try:
        result = project.run("run", "--date", DAY)
        assert result.returncode == 0, result.stderr
        assert_no_worker_after(ledger(project.root), "start 2")
        log = [json.loads(line) for line in (project.log_dir / "maintenance.log").read_text().splitlines()]
        assert any(e["event"] == "task_left_processes_stopping_them" and e["task"] == "a" for e in log)
    finally:
        kill(workers(ledger(project.root)))


def test_an_escaped_worker_of_a_completed_task_writes_nothing_after_its_dependent_starts(project, r):
    dependent = [sys.executable, "-c", DEPENDENT, str(project.root / "ledger")]
    project.write_config(HEAD + task(project.root, "a", "setsid", code=0) +
                         f'[[tasks]]\nname = "b"\ncommand = {json.dumps(dependent)}\nafter = ["a"]\n')
    try:
        result = project.run("run", "--date", DAY)
        assert result.returncode == 0, result.stderr
        assert_no_worker_after(ledger(project.root), "dependent")
    finally:
        kill(workers(ledger(project.root)))


def test_an_escaped_worker_of_a_completed_task_writes_nothing_after_the_next_sessions_cycle_starts(project, r):
    """Two sessions in one run (a recovery): the task's second start is the next session's cycle."""
    project.write_config(HEAD + task(project.root, "a", "double-fork", code=0))
    try:
        result = project.run("recover", "--since", "2026-11-24", "--until", DAY)
        assert result.returncode == 0, result.stderr
        assert_no_worker_after(ledger(project.root), "start 2")
        assert [json.loads(r.get(f"maintenance:status:{day}"))["tasks"] for day in ("2026-11-24", DAY)] == \
            [{"a": "completed"}] * 2
    finally:
        kill(workers(ledger(project.root)))


STOPS_ITS_PARENT = """
import os, signal, time

def ancestor(pid):
    return proc_stat(pid)[1]

def proc_stat(pid):
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return fields[0], int(fields[1])

def run(ctx):
    reaper = os.getppid()
    supervisor = ancestor(reaper)
    with open(ctx.params["ledger"], "a") as f:
        f.write(f"family {os.getpid()} {reaper} {supervisor}\\n")
    os.kill(reaper if ctx.params["target"] == "parent" else supervisor, signal.SIGSTOP)
    while True:
        time.sleep(0.1)
"""


@pytest.mark.parametrize("target, code", [("parent", 1), ("grandparent", 75)])
def test_a_task_that_stops_its_parents_ends_within_its_timeout_and_grace_and_leaves_nothing(project, r, target,
                                                                                            code):
    """The task's parent is its attempt's reaper, its grandparent the run's supervisor (the runner is above)."""
    (project.root / "stopper.py").write_text(STOPS_ITS_PARENT)
    project.write_config(HEAD.replace("0.5", "1") + textwrap.dedent(f"""
        [[tasks]]
        name = "stopper"
        python = "stopper:run"
        timeout = 4
        params = {{ ledger = "{project.root / 'ledger'}", target = "{target}" }}
        """))
    family: list[int] = []
    try:
        # timeout 4 + grace 1 + a margin: a run that hangs on what its task did raises TimeoutExpired here.
        result = project.run("run", "--date", DAY, timeout=4 + 1 + 25)
        family = [int(pid) for pid in ledger(project.root)[0].split()[1:]]
        assert result.returncode == code, result.stderr
        assert not [pid for pid in family if proc.alive(pid)]  # the task, its reaper, the supervisor
        detail = json.loads(r.get(f"maintenance:status:{DAY}"))["task_details"]["stopper"]
        if target == "parent":
            assert detail["error"] == "timed out after 4s"
        else:
            assert "supervisor" in result.stderr and "stopped" in result.stderr
    finally:
        for pid in family or [int(p) for p in (ledger(project.root) or ["x"])[0].split()[1:] if p.isdigit()]:
            proc.signal_all([pid], signal.SIGCONT)
            proc.signal_all([pid], signal.SIGKILL)


def run_record(project) -> containment.RecordedRun | None:
    runs = sorted((project.state_dir / containment.RUNS_DIR).glob("*"))
    return containment.RecordedRun.read(runs[0]) if runs else None


@pytest.mark.parametrize("mode", ["auto", "subreaper"])
def test_a_double_kill_with_a_reset_environment_never_overlaps_the_rerun(project, r, mode):
    """Runner, supervisor and reapers SIGKILLed at once (`pkill -9 -f tradeul_maint`); the worker has `env -i`."""
    head = HEAD + f'containment = "{mode}"\n[redis]\nlock_lease_seconds = 2\n'
    project.write_config(head + task(project.root, "a", "env-i", code=0, pause=60))
    runner = project.spawn("run", "--date", DAY)
    left: set[int] = set()
    try:
        assert wait_for(lambda: workers(ledger(project.root)), 30)
        worker = workers(ledger(project.root)).pop()
        # What the record says of the worker before the kill: its cgroup, or its identity (noted every 0.5 s).
        assert wait_for(lambda: (run := run_record(project)) is not None and (
            run.cgroup is not None or worker in {i.pid for i in run.tasks}), 10)
        ours = [s.pid for s in proc.descendants(runner.pid) if b"tradeul_maint" in
                Path(f"/proc/{s.pid}/cmdline").read_bytes()]
        assert ours  # the supervisor and the attempt's reaper
        kill([runner.pid, *ours])
        runner.communicate(timeout=10)
        left = {s.pid for s in proc.table().values() if s.alive and worker in (s.pid,)}
        assert left  # the worker outlived them all, as such a kill leaves it
        for _ in range(40):  # cron's next ticks: the dead run's lease runs out within 2 s
            result = project.run("run", "--date", DAY)
            if result.returncode != 75:
                break
            time.sleep(0.2)
        assert result.returncode == 0, result.stderr
        assert_no_worker_after(ledger(project.root), "start 2")
        log = [json.loads(line) for line in (project.log_dir / "maintenance.log").read_text().splitlines()]
        assert any(e["event"] == "leftover_processes_stopped" and worker in e["pids"] for e in log)
        assert not list((project.state_dir / containment.RUNS_DIR).glob("*"))  # the dead run is forgotten
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
        kill(workers(ledger(project.root)))


def write_record(state_dir: Path, run_id: str, lock: str, lines: list[str], cgroup: str | None = None) -> Path:
    header = {"run_id": run_id, "lock": lock, "host": socket.gethostname(), "boot": proc.boot_id(), "cgroup": cgroup,
              "pid": 1}
    path = state_dir / containment.RUNS_DIR / run_id
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(header) + "\n" + "".join(f"{line}\n" for line in lines))
    return path


def test_a_dead_runs_record_stops_its_processes_and_nothing_else(tmp_path):
    """By pid and start time: a recorded pid now another process (its start differs) is left alone, and a record
    naming a cgroup that is not its run's own never empties it."""
    victim, bystander = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "61"])
    try:
        start = proc.identity(bystander.pid).start
        elsewhere = tmp_path / "some-cgroup"  # shaped like one, listing the bystander
        elsewhere.mkdir()
        (elsewhere / "cgroup.procs").write_text(f"{bystander.pid}\n")
        path = write_record(tmp_path, "deadrun", "maintenance:lock",
                            [proc.identity(victim.pid).line().strip(), f"{bystander.pid} {start + 1}"],
                            cgroup=str(elsewhere))
        found = containment.stop_dead_runs(tmp_path, "maintenance:lock", "mine", grace=5, give_up=5)
        assert found == {"deadrun": [victim.pid]}
        assert victim.wait(5) == -signal.SIGTERM
        assert bystander.poll() is None and not path.exists()
    finally:
        kill([victim.pid, bystander.pid])
        victim.wait()
        bystander.wait()


def test_a_live_run_of_another_lock_is_left_alone(tmp_path):
    """Its supervisor holds the record's flock: another job's runner, alive, is none of this runner's business."""
    worker = subprocess.Popen(["sleep", "62"])
    try:
        path = write_record(tmp_path, "liverun", "other:lock", [proc.identity(worker.pid).line().strip()])
        with open(path) as held:
            fcntl.flock(held, fcntl.LOCK_SH)
            assert containment.stop_dead_runs(tmp_path, "maintenance:lock", "mine", grace=5, give_up=5) == {}
            assert worker.poll() is None and path.exists()
        # Once nothing holds it, the run is dead: what is left of it is stopped, whichever lock it held.
        assert containment.stop_dead_runs(tmp_path, "maintenance:lock", "mine", grace=5, give_up=5) == \
            {"liverun": [worker.pid]}
    finally:
        kill([worker.pid])
        worker.wait()


def test_the_proc_reader_is_not_fooled_by_a_process_name():
    """/proc/PID/stat puts the name between parentheses, and a name may hold ') ' itself."""
    code = ("import ctypes, sys, time\n"
            "ctypes.CDLL(None).prctl(15, b') R 1 1 1 (', 0, 0, 0)\n"  # PR_SET_NAME
            "print('named', flush=True)\ntime.sleep(30)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "named\n"
        found = proc.stat(child.pid)
        assert found is not None and found.ppid == os.getpid() and found.state in "RS"
        assert proc.still(found.identity) and child.pid in {s.pid for s in proc.descendants(os.getpid())}
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_a_cgroup_tree_removed_while_it_is_read_is_no_error(tmp_path):
    """A run's cgroup is read and removed by its own supervisor and by the next runner's look at dead runs, at
    the same moments (the overlap fault trial met this: exit 70 on a FileNotFoundError). A tree that vanishes
    under a reader reads as empty and counts as removed. Empty directories stand in for cgroups here."""
    import threading

    root, stop = tmp_path / "tradeul-maint.run", threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for leaf in ("a/b/c", "a/d", "e"):
                (root / leaf).mkdir(parents=True, exist_ok=True)
            containment.remove_cgroup(root)

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(3000):
            assert containment.cgroup_pids(root) == []
            containment.remove_cgroup(root)
    finally:
        stop.set()
        worker.join()
    assert containment.remove_cgroup(root) and not root.exists()
    assert containment.cgroup_pids(tmp_path / "never") == [] and containment.remove_cgroup(tmp_path / "never")
