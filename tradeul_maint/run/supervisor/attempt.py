"""An attempt's processes: what they share, and the task's main process, forked by the attempt's reaper.

A reaper (reaper.py) is forked from the supervisor and made a child subreaper
(PR_SET_CHILD_SUBREAPER), so that every process an attempt starts and leaves orphaned,
whatever its session or group (`setsid`, a double fork), is reparented to it rather than to
init. It serves one attempt after another, never two at once: an attempt is over only once
the reaper has no child left, and only then does it report (`Report`, pipe.py) and take the
next. Between two attempts it gets ready for the next one: it forks the task's main process
(`main_process`, here), which waits in a session and group of its own for its `Start` and
then execs the command (no shell) or calls the Python task's callable. So a start forks
nothing; each attempt costs one process, as it would without the reaper.

While an attempt runs, the reaper keeps the tail of its output, and:

- when the main process exits, whatever it left running is stopped (SIGTERM and SIGCONT,
  the grace period, SIGKILL), as systemd's KillMode=control-group does for a unit;
- `StopAttempt` from the supervisor stops the attempt the same way (`kill_now`: SIGKILL
  what is left at once, when a lease ends sooner than the grace period);
- when the supervisor dies, the kernel sends the reaper `SUPERVISOR_GONE` (SIGUSR2, its
  PR_SET_PDEATHSIG), and it stops the attempt the same way before it exits.

The main process dies with its reaper (PR_SET_PDEATHSIG, which a set-user-ID program
clears); what a killed reaper leaves is the supervisor's (its orphans come to it) or,
after a double kill, found by the run's record (run/containment.py).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tradeul_maint.config.settings import Settings
from tradeul_maint.run import taskenv
from tradeul_maint.run.containment import RunRecord
from tradeul_maint.run.gate import StepGate
from tradeul_maint.run.messages import CommandRequest, PythonRequest, Start
from tradeul_maint.run.supervisor.pipe import read_message
from tradeul_maint.run.tasks import task_environment

SUPERVISOR_GONE = signal.SIGUSR2  # the reaper's PR_SET_PDEATHSIG
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Signals a task's process starts with at their default, whatever this process did with them.
DEFAULT_SIGNALS = (*STOP_SIGNALS, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGUSR1, SUPERVISOR_GONE)
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the other safeguards still hold
        return None


_PRCTL = _load_prctl()  # loaded once: a process forked from here calls it at once


def prctl(option: int, value: int) -> None:
    if _PRCTL is not None:
        _PRCTL(option, value, 0, 0, 0)


def become_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


class TaskStopped(BaseException):
    """Raised in a Python task's process by SIGTERM: not an Exception, so a task's `except Exception` lets it pass."""


@dataclass(frozen=True)
class Shared:
    """What every attempt of a run shares, in the supervisor's memory when it forks a reaper."""

    run_id: str
    settings: Settings
    grace: float
    record: RunRecord | None  # the run's record of its processes (run/containment.py)
    task_client: Any  # a Redis client for Python tasks, made once in the supervisor and never used there
    make_client: Callable[[], Any] | None  # what made it (again in the task's process if that failed)
    redis: dict[str, Any] | None  # where the run's Redis is, for a `redis_env` task (run/taskenv.py)
    run_cgroup: Path | None  # the run's cgroup: each reaper, and so each attempt in turn, gets one below it
    watch_identities: bool  # no cgroup: the reaper notes its main processes in the record
    gate: StepGate | None = None  # where a task's process waits until its step is written (run/gate.py)


# --- the reaper ----------------------------------------------------------------------------


# --- a Python task's main process -----------------------------------------------------------


def main_process(assign_r: int, shared: Shared, reaper_pid: int, out_w: int, res_w: int, console: int) -> int:
    """The task's main process: ready in a session of its own, then its attempt, as a command or a Python task."""
    os.setsid()
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != reaper_pid:  # the reaper died between fork and prctl
        return 70
    signal.set_wakeup_fd(-1)
    for sig in DEFAULT_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    for fd in (null, out_w):
        os.close(fd)
    start = read_message(assign_r)
    os.close(assign_r)
    if not isinstance(start, Start):  # the run ended before this spare got an attempt
        return 0
    request = start.request
    env = task_environment(request.env)
    taskenv.confine(env, request.redis_env, shared.redis)
    if isinstance(request, CommandRequest):
        _wait_at_gate(shared, start)
        try:
            os.execvpe(request.argv[0], list(request.argv), env)
        except OSError as exc:  # res_w is close-on-exec: only a failed exec writes to it
            os.write(res_w, json.dumps({"exec_error": exc.errno, "strerror": exc.strerror}).encode())
            return 127
    _set_environment(env)
    return python_task(request, shared, res_w, console, start)


def _wait_at_gate(shared: Shared, start: Start) -> None:
    """Ready: wait until the runner's step that started this attempt is written (run/gate.py)."""
    if start.gate and shared.gate is not None:
        shared.gate.wait(start.gate)
        shared.gate.leave()


def python_task(request: PythonRequest, shared: Shared, res_w: int, console: int, start: Start) -> int:
    """Call the task's callable with a context made for it; the outcome goes to `res_w` as JSON."""
    from tradeul_maint.config import logs
    from tradeul_maint.run import tasks

    sys.stdin = open(os.devnull)  # noqa: SIM115 - the process ends with the task
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115

    def stopped(signum: int, frame: object) -> None:
        raise TaskStopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stopped)
    logs.after_fork(console=open(console, "w", buffering=1))  # noqa: SIM115
    from loguru import logger

    spec, day = request.spec, request.session.isoformat()
    settings = shared.settings
    redis = shared.task_client
    if redis is None and shared.make_client is not None:
        redis = shared.make_client()
    ctx = tasks.TaskContext(date=request.session, task=spec.name, run_id=request.run_id, redis=redis,
                            logger=logger.bind(date=day, run_id=request.run_id, task=spec.name, job=settings.job),
                            params=dict(spec.params), key_prefix=settings.redis.key_prefix,
                            namespaces=settings.namespaces)
    try:
        _wait_at_gate(shared, start)  # inside: a SIGTERM while it waits is a stop like any other
        outcome = tasks.run_python(spec, ctx, tuple(settings.python_paths))
    except TaskStopped as exc:
        outcome = tasks.Outcome(False, f"stopped by {exc}", result=dict(ctx.result) or None)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    data = memoryview(json.dumps(outcome.to_json(), default=str).encode())
    while data:
        data = data[os.write(res_w, data):]
    return 0


def _set_environment(env: dict[str, str]) -> None:
    """os.environ becomes `env` (what the task's own subprocesses inherit), changing only what differs."""
    for name in [n for n in os.environ if n not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
