"""Executing one attempt of one task: a command, a Python callable, or a built-in.

A command runs without a shell in a process group of its own, so a timeout or a signal
can stop it together with everything it started. A Python task gets a TaskContext and
fails by raising or by returning `{"success": False, "error": ...}` (the dict the
existing task classes return). Built-ins are Python tasks registered by name.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import importlib
import inspect
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from tradeul_maint.errors import TaskLoadError
from tradeul_maint.settings import TaskSpec

OUTPUT_LIMIT = 64 * 1024  # bytes of a command's output kept, from the end
KILL_GRACE = 5.0


@dataclass
class TaskContext:
    """What a Python or built-in task receives: one per task per cycle, shared by its retries.

    The task sees only this: the session it works for (never "today": a catch-up runs
    older sessions), a Redis client, a logger, its configured params, and `report` for the
    counts an operator reads in the status document. Sync callables run in a thread of
    their own, abandoned (not stopped) at the task's `timeout`; async ones run on an event
    loop the runner creates for the attempt, and the timeout cancels them (CancelledError
    at the pending await, so their cleanup runs).
    """

    date: dt.date  # the session the maintenance is for; also `session`
    task: str  # the task's configured name
    run_id: str  # this invocation's run id, as in the logs and the status document
    redis: Any  # a redis.Redis client (bytes replies) on the maintenance Redis, shared: do not close it
    logger: Any  # a loguru logger bound to date, task and run_id: ctx.logger.bind(rows=n).info("bars_loaded")
    params: dict[str, Any] = field(default_factory=dict)  # the task's `params` table, as written in the config
    result: dict[str, Any] = field(default_factory=dict)  # what report() collected

    @property
    def session(self) -> dt.date:
        return self.date

    def report(self, **counts: Any) -> None:
        """Record result counts (keys deleted, rows loaded...) for the session's status document.

        They land in `task_details.<task>.result` when the task completes, merged with the
        scalars of a returned `{"success": True, ...}` dict. Keep them JSON scalars.
        """
        self.result.update(counts)


@dataclass(frozen=True)
class Outcome:
    success: bool
    error: str | None = None
    output: str | None = None
    result: dict[str, Any] | None = None


class ProcessGroups:
    """The command processes alive right now, so a signal handler can stop their groups."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self.stopping: str | None = None

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)
        if self.stopping:
            terminate_group(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop_all(self, why: str) -> None:
        self.stopping = why
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            terminate_group(proc)


def terminate_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the group, SIGKILL what is left after a grace period."""
    terminate_group(proc)
    try:
        proc.wait(KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    terminate_group(proc, signal.SIGKILL)  # members that ignored SIGTERM or outlived their leader
    proc.wait()


def run_command(spec: TaskSpec, ctx: TaskContext, groups: ProcessGroups) -> Outcome:
    argv = [arg.replace("{date}", ctx.date.isoformat()) for arg in spec.command]
    env = {**os.environ, "TRADEUL_MAINT_DATE": ctx.date.isoformat(), "TRADEUL_MAINT_TASK": spec.name,
           "TRADEUL_MAINT_RUN_ID": ctx.run_id}
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    except FileNotFoundError:
        return Outcome(False, f"command not found: {argv[0]}")
    except OSError as exc:
        return Outcome(False, f"cannot start {argv[0]}: {exc.strerror or exc}")
    groups.add(proc)
    tail = collections.deque()
    reader = threading.Thread(target=_read_tail, args=(proc.stdout, tail), daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(spec.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc)
    finally:
        groups.discard(proc)
    # A grandchild that left the group may hold the pipe open: do not wait for it forever.
    reader.join(timeout=2)
    output = b"".join(tail).decode("utf-8", errors="replace")
    if timed_out:
        return Outcome(False, f"timed out after {spec.timeout:g}s", output)
    if groups.stopping:
        return Outcome(False, f"interrupted by {groups.stopping}", output)
    if proc.returncode != 0:
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}")
        return Outcome(False, f"{argv[0]} failed with {how}", output)
    return Outcome(True, output=output)


def _read_tail(stream, tail: collections.deque) -> None:
    size = 0
    for chunk in iter(lambda: stream.read1(8192), b""):
        tail.append(chunk)
        size += len(chunk)
        while size - len(tail[0]) >= OUTPUT_LIMIT:
            size -= len(tail.popleft())
    stream.close()


def load_callable(reference: str, paths: tuple[str, ...] = ()) -> Callable:
    """`package.module:callable`, imported from `paths` (Settings.python_paths) before sys.path.

    The paths come first so that a task resolves the same whatever the working directory
    (cron starts in $HOME or /); TaskLoadError says, in one line, what did not load and why.
    """
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    module_name, _, attr = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except ImportError as exc:
        raise TaskLoadError(f"{reference}: {type(exc).__name__}: {exc} (searched {', '.join(paths) or 'sys.path'} "
                            "first: set [run] pythonpath)") from None
    except AttributeError:
        raise TaskLoadError(f"{reference}: module {module_name} has no attribute {attr!r}") from None
    except Exception as exc:  # the module itself failed while being imported
        raise TaskLoadError(f"{reference}: importing {module_name} raised {type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise TaskLoadError(f"{reference} is a {type(target).__name__}, not a callable")
    return target


def run_callable(func: Callable, ctx: TaskContext, timeout: float | None) -> Outcome:
    """Call a sync or async task callable; a timeout cancels an async one and abandons a sync one."""
    if inspect.iscoroutinefunction(func):
        return _interpret(asyncio.run(_with_timeout(func(ctx), timeout)), ctx)
    if timeout is None:
        result = func(ctx)
    else:
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["result"] = func(ctx)
            except BaseException as exc:  # re-raised in the task's thread below
                box["error"] = exc

        worker = threading.Thread(target=call, name=f"task-{ctx.task}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            return Outcome(False, f"timed out after {timeout:g}s (the Python callable could not be stopped and "
                                  "was abandoned)")
        if "error" in box:
            raise box["error"]
        result = box.get("result")
    if inspect.isawaitable(result):
        result = asyncio.run(_with_timeout(result, timeout))
    return _interpret(result, ctx)


async def _with_timeout(awaitable, timeout: float | None):
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"timed out after {timeout:g}s") from None


def _interpret(result: Any, ctx: TaskContext) -> Outcome:
    if isinstance(result, dict):
        if result.get("success") is False:
            return Outcome(False, str(result.get("error") or "task returned success = false"),
                           result={**ctx.result, **_counts(result)} or None)
        ctx.result.update(_counts(result))
    return Outcome(True, result=dict(ctx.result) or None)


def _counts(result: dict) -> dict:
    """The JSON-safe scalars of a task's result dict, for the status document."""
    return {k: v for k, v in result.items() if k not in ("success", "error")
            and isinstance(v, (int, float, str, bool)) and not (isinstance(v, str) and len(v) > 200)}


def run_python(spec: TaskSpec, ctx: TaskContext, paths: tuple[str, ...] = ()) -> Outcome:
    if spec.builtin:
        from tradeul_maint.builtins import builtin_callable

        func = builtin_callable(spec.builtin)
    else:
        try:
            func = load_callable(spec.python, paths)
        except TaskLoadError as exc:
            return Outcome(False, f"cannot load {exc}")
    try:
        return run_callable(func, ctx, spec.timeout)
    except (Exception, SystemExit) as exc:  # sys.exit() in a task fails the task, not the runner
        # What the task reported before it failed still tells how far it got.
        return Outcome(False, f"{type(exc).__name__}: {exc}", result=dict(ctx.result) or None)
