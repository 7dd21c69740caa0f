"""The ledger the fault trials and the simulated year judge the tool by: what the tasks themselves say they did.

Every task the harness configures appends one JSON line when it starts and one when it ends
(or fails) to a ledger file opened with O_APPEND, written with a single `write` of less than
PIPE_BUF bytes, so lines from concurrent tasks never interleave. A line carries the event,
the task, the session, the process id and process group, the run id the tool gave the task,
and the wall-clock time. From those lines alone the harness rebuilds every execution (start
to end, or start to "still running") and asks the questions the invariants ask: did a task
run twice, did two executions overlap, which processes of a task are still alive.

The two task implementations live here as source text, written into each trial's directory:
`ledger_task.py` (a `command` task: a separate program, no import of this package) and
`ledger_pytask.py` (a `python` task). Both fail on purpose when a fault calendar says so,
keyed by session, task and attempt, where the attempt is counted from the ledger itself, so
the decision is the same whether the task runs in the runner, a child or a grandchild.
"""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path

# What both tasks write with: one line per event, one `write` on an O_APPEND descriptor; and the
# attempt number, counted from the ledger itself.
LEDGER_WRITES = r'''
import json, os, time

def note(ledger, **fields):
    fields.update(pid=os.getpid(), pgid=os.getpgid(0), ppid=os.getppid(), t=time.time())
    fields.setdefault("run", os.environ.get("TRADEUL_MAINT_RUN_ID", ""))
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(fields, separators=(",", ":")) + "\n").encode())
    finally:
        os.close(fd)

def attempt(ledger, task, session):
    try:
        with open(ledger) as f:
            return 1 + sum(1 for line in f if '"ev":"start"' in line and f'"task":"{task}"' in line
                           and f'"session":"{session}"' in line)
    except FileNotFoundError:
        return 1
'''

# A worker a task leaves running (`--escape HOW`): a line every 20 ms; it ignores SIGTERM, so only SIGKILL
# (or its absence) decides. argv: LEDGER TASK SESSION ATTEMPT MARKER
WORKER = LEDGER_WRITES + r'''
import signal, sys
ledger, task, session, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    note(ledger, ev="worker", task=task, session=session, attempt=n)
    time.sleep(0.02)
'''

# How a task leaves a worker behind, out of its process group: `setsid`, a double fork with setsid,
# or `setsid env -i` (an environment without the run id). Returns once the worker has written a line.
ESCAPE = r'''
def escape(how, ledger, task, session, n, marker):
    import subprocess, sys
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ledger_worker.py")
    argv = [sys.executable, worker, ledger, task, session, str(n), marker]
    if how == "setsid":
        subprocess.Popen(["setsid", *argv])
    elif how == "env-i":
        subprocess.Popen(["setsid", "env", "-i", *argv])
    elif os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, argv)
        os._exit(0)
    else:
        os.wait()
    mine = f'"ev":"worker","task":"{task}","session":"{session}","attempt":{n}'
    while True:
        with open(ledger) as f:
            if mine in f.read():
                return
        time.sleep(0.01)
'''

# A `command` task. argv: LEDGER TASK SESSION SLEEP [--ignore-term] [--children N] [--faults FILE] [--marker M]
#                          [--escape HOW]
COMMAND_TASK = LEDGER_WRITES + ESCAPE + r'''
import signal, subprocess, sys

ledger, task, session, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
opts = sys.argv[5:]
ignore = "--ignore-term" in opts
children = int(opts[opts.index("--children") + 1]) if "--children" in opts else 0
faults = opts[opts.index("--faults") + 1] if "--faults" in opts else None
marker = opts[opts.index("--marker") + 1] if "--marker" in opts else ""
how = opts[opts.index("--escape") + 1] if "--escape" in opts else None
if ignore:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
n = attempt(ledger, task, session)
note(ledger, ev="start", task=task, session=session, attempt=n)
for i in range(children):
    # Grandchildren stay in the task's process group; they ignore SIGTERM when the task does.
    code = ("import signal, sys, time\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore else "")
            + "time.sleep(float(sys.argv[1]))")
    child = subprocess.Popen([sys.executable, "-c", code, str(pause + 30), marker])
    note(ledger, ev="child", task=task, session=session, child=child.pid)
if how:
    escape(how, ledger, task, session, n, marker)
fail = False
if faults:
    with open(faults) as f:
        fail = n in json.load(f).get(f"{session}/{task}", [])
# Work, not a deadline: sleep in short steps, so that time spent stopped (SIGSTOP) does not count.
left = pause
while left > 0:
    time.sleep(min(0.05, left))
    left -= 0.05
if fail:
    note(ledger, ev="fail", task=task, session=session, attempt=n)
    print(f"{task}: failing on purpose (fault calendar, attempt {n})", file=sys.stderr)
    sys.exit(3)
note(ledger, ev="end", task=task, session=session, attempt=n)
'''

# A `python` task: python = "ledger_pytask:task", params = {ledger, sleep, faults?, log_lines?, escape?, marker?,
# parents?}. `parents`: "stop-parent", "kill-parent", "stop-grandparent" or "kill-grandparent" (its parent is
# its attempt's reaper, its grandparent the run's supervisor), after noting both as `family`.
PYTHON_TASK = LEDGER_WRITES + ESCAPE + r'''
import signal

def _parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])

def task(ctx):
    p = ctx.params
    session, name, ledger = ctx.date.isoformat(), ctx.task, p["ledger"]
    n = attempt(ledger, name, session)
    note(ledger, ev="start", task=name, session=session, run=ctx.run_id, attempt=n)
    if p.get("escape"):
        escape(p["escape"], ledger, name, session, n, p.get("marker", ""))
    if p.get("parents"):
        act, _, whom = p["parents"].partition("-")
        reaper = os.getppid()
        supervisor = _parent_of(reaper)
        note(ledger, ev="family", task=name, session=session, reaper=reaper, supervisor=supervisor)
        os.kill(reaper if whom == "parent" else supervisor, signal.SIGSTOP if act == "stop" else signal.SIGKILL)
    for i in range(int(p.get("log_lines", 0))):
        ctx.logger.bind(writer=p.get("writer", name), seq=i, pad="x" * 40).info("ledger_log_line")
    left = float(p.get("sleep", 0))
    while left > 0:  # work, not a deadline: time spent stopped does not count
        time.sleep(min(0.05, left))
        left -= 0.05
    fail = False
    if p.get("faults"):
        with open(p["faults"]) as f:
            fail = n in json.load(f).get(f"{session}/{name}", [])
    if fail:
        note(ledger, ev="fail", task=name, session=session, run=ctx.run_id, attempt=n)
        return {"success": False, "error": f"failing on purpose (fault calendar, attempt {n})"}
    note(ledger, ev="end", task=name, session=session, run=ctx.run_id, attempt=n)
    return {"success": True}
'''


def install(directory: Path) -> tuple[Path, Path]:
    """Write both task implementations (and the worker) into `directory`; returns (command script, python module)."""
    directory.mkdir(parents=True, exist_ok=True)
    command, module = directory / "ledger_task.py", directory / "ledger_pytask.py"
    command.write_text(COMMAND_TASK)
    module.write_text(PYTHON_TASK)
    (directory / "ledger_worker.py").write_text(WORKER)
    return command, module


@dataclass
class Execution:
    """One attempt of one task as the ledger tells it: from its start line to its end or fail line."""

    task: str
    session: str
    pid: int
    pgid: int
    run: str
    start: float
    end: float | None = None  # None: no end line (still running, killed, or stopped)
    failed: bool = False
    attempt: int = 0
    children: tuple[int, ...] = ()

    @property
    def completed(self) -> bool:
        return self.end is not None and not self.failed

    def until(self, horizon: float) -> float:
        return self.end if self.end is not None else horizon

    def describe(self) -> str:
        end = "still open" if self.end is None else f"{'failed' if self.failed else 'ended'} {self.end:.3f}"
        return (f"{self.task}@{self.session} pid {self.pid} pgid {self.pgid} run {self.run or '?'} "
                f"started {self.start:.3f}, {end}")


def read(path: Path) -> list[dict]:
    """Every line of the ledger, parsed; a line that does not parse is a harness bug and raises."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def executions(path: Path) -> list[Execution]:
    """The ledger's executions in start order. A start is paired with the next end/fail of the same pid and task."""
    open_: dict[tuple[int, str, str], Execution] = {}
    done: list[Execution] = []
    for e in read(path):
        key = (e["pid"], e["task"], e["session"])
        if e["ev"] == "start":
            if key in open_:
                done.append(open_.pop(key))
            open_[key] = Execution(e["task"], e["session"], e["pid"], e.get("pgid", 0), e.get("run", ""), e["t"],
                                   attempt=e.get("attempt", 0))
        elif e["ev"] == "child" and key in open_:
            ex = open_[key]
            ex.children = ex.children + (e["child"],)
        elif e["ev"] in ("end", "fail") and key in open_:
            ex = open_.pop(key)
            ex.end, ex.failed = e["t"], e["ev"] == "fail"
            done.append(ex)
    done.extend(open_.values())
    return sorted(done, key=lambda x: x.start)


def overlapping(execs: list[Execution], same_task: bool = True, horizon: float = math.inf
                ) -> list[tuple[Execution, Execution]]:
    """Pairs of executions running at the same time: of one task of one session, or (same_task=False)
    of two different runs, whatever the task (two cycles at once). An execution without an end runs
    until `horizon`."""
    pairs = []
    for i, a in enumerate(execs):
        for b in execs[i + 1:]:
            if same_task and (a.task, a.session) != (b.task, b.session):
                continue
            if not same_task and (not a.run or not b.run or a.run == b.run):
                continue
            if b.start < a.until(horizon) and a.start < b.until(horizon):
                pairs.append((a, b))
    return pairs


# --- processes -------------------------------------------------------------------------


def _stat(pid: str) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a live process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[2])


def alive(pid: int) -> bool:
    stat = _stat(str(pid))
    return stat is not None and stat[0] not in ("Z", "X")


def processes(marker: str | None = None, pgids: set[int] | frozenset[int] = frozenset(),
              pids: set[int] | frozenset[int] = frozenset()) -> dict[int, str]:
    """Live (non-zombie) processes whose command line contains `marker`, or whose process group is
    in `pgids`, or whose pid is in `pids`: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        stat = _stat(entry.name)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            cmdline = raw.replace(b"\0", b" ").replace(b"\n", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if (marker and marker in cmdline) or stat[2] in pgids or int(entry.name) in pids:
            found[int(entry.name)] = cmdline
    return found


def descendants(root: int) -> list[int]:
    """Every live process below `root` in the parent tree (whatever its session or group)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(entry.name)) is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_all(pids) -> None:
    """SIGKILL exactly these processes (the harness's cleanup of what a trial left behind)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
