"""One attempt of one task, as the runner describes it and as it runs in its own process.

Every attempt runs in processes of its own, started by the run's supervisor
(supervisor/attempt.py): a command is exec'd there (without a shell), a Python task's
callable is called there with a TaskContext rebuilt for it. The runner asks with
`command_request` or `python_request`, and turns what the supervisor reports back (an
`Ended`) into an Outcome (`command_outcome`, `python_outcome`). A Python task fails by raising or by returning
`{"success": False, "error": ...}` (the dict the existing task classes return); built-ins
are Python tasks registered by name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import importlib
import inspect
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from tradeul_maint.errors import TaskLoadError
from tradeul_maint.exchange import CommandRequest, Ended, PythonRequest
from tradeul_maint.settings import TaskSpec

TRACEBACK_LIMIT = 8192  # characters of a failed Python task's traceback kept, from the end
# What a task's environment names, beyond the run's own environment.
DATE_VAR, TASK_VAR, RUN_ID_VAR = "TRADEUL_MAINT_DATE", "TRADEUL_MAINT_TASK", "TRADEUL_MAINT_RUN_ID"


@dataclass
class TaskContext:
    """What a Python or built-in task receives: one per attempt, in the attempt's own process.

    The task sees only this: the session it works for (never "today": a catch-up runs
    older sessions), a Redis client of its own, a logger, its configured params, and
    `report` for the counts an operator reads in the status document. The process is a
    fresh fork of the run's supervisor: module-level state does not carry over from one
    task or attempt to the next, and nothing the task changes reaches the runner except
    its outcome and what it reports.
    """

    date: dt.date  # the session the maintenance is for; also `session`
    task: str  # the task's configured name
    run_id: str  # this invocation's run id, as in the logs and the status document
    redis: Any  # a redis.Redis client (bytes replies) on the maintenance Redis, this attempt's own
    logger: Any  # a loguru logger bound to date, task and run_id: ctx.logger.bind(rows=n).info("bars_loaded")
    params: dict[str, Any] = field(default_factory=dict)  # the task's `params` table, as written in the config
    result: dict[str, Any] = field(default_factory=dict)  # what report() collected
    key_prefix: str = "maintenance"  # the tool's own keys: built-ins never delete under it
    namespaces: tuple[str, ...] = ()  # ...nor under any job's (Settings.namespaces); () : key_prefix's alone

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
    traceback: str | None = None  # a Python task's, when it raised

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def parse_day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


# --- what the runner asks for, and what it makes of the answer ---------------------------------


def command_request(spec: TaskSpec, session: dt.date, run_id: str,
                    argv: tuple[str, ...] | None = None) -> CommandRequest:
    """`{date}` in any argument becomes the session. `argv` is the task's wait_for probe instead of its command:
    a probe runs as a command does, with the task's names and redis_env."""
    day = session.isoformat()
    return CommandRequest(tuple(arg.replace("{date}", day) for arg in argv or spec.command),
                          _names(spec, session, run_id), spec.redis_env)


def python_request(spec: TaskSpec, session: dt.date, run_id: str) -> PythonRequest:
    return PythonRequest(spec, session, run_id, _names(spec, session, run_id), spec.redis_env)


def _names(spec: TaskSpec, session: dt.date, run_id: str) -> dict[str, str]:
    """What a task's environment says beyond the run's own: its session, its name and its run."""
    return {DATE_VAR: session.isoformat(), TASK_VAR: spec.name, RUN_ID_VAR: run_id}


def task_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a task's process (a command's, and a Python task's os.environ): the run's own
    environment plus `extra` (`_names`). Built here, in one place, in the attempt's process."""
    return {**os.environ, **extra}


def command_outcome(spec: TaskSpec, ended: Ended, program: str | None = None) -> Outcome:
    """How a command (or, with `program` its wait_for[0], a probe) ended."""
    program = program or spec.command[0]
    output = ended.output or None
    failed_exec = ended.result if isinstance(ended.result, dict) else {}
    if "exec_error" in failed_exec:
        if failed_exec["exec_error"] in (errno.ENOENT, errno.ENOTDIR):
            return Outcome(False, f"command not found: {program}", output)
        return Outcome(False, f"cannot start {program}: {failed_exec.get('strerror')}", output)
    if ended.stopped:
        return Outcome(False, ended.stopped, output)
    code = ended.returncode
    if code:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return Outcome(False, f"{program} failed with {how}", output)
    return Outcome(True, output=output)


def python_outcome(ended: Ended) -> Outcome:
    output = ended.output or None
    reported = ended.result
    if ended.stopped:
        result = reported.get("result") if isinstance(reported, dict) else None
        return Outcome(False, ended.stopped, output, result)
    if isinstance(reported, dict) and "success" in reported:
        return Outcome(bool(reported["success"]), reported.get("error"), output, reported.get("result"),
                       reported.get("traceback"))
    code = ended.returncode
    how = f"was killed by signal {-code}" if code and code < 0 else f"exited with code {code}"
    return Outcome(False, f"the task's process {how} before reporting an outcome", output)


# --- inside the attempt's process ---------------------------------------------------------------


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


def run_callable(func: Callable, ctx: TaskContext) -> Outcome:
    """Call a sync or async task callable; an awaitable it returns runs on an event loop of its own.

    A timeout is the runner's: it stops the attempt's process (SIGTERM raises TaskStopped
    here, which cancels an async task at its pending await, so its cleanup runs).
    """
    result = func(ctx)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    return _interpret(result, ctx)


async def _awaited(awaitable):
    return await awaitable


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
        return run_callable(func, ctx)
    except (Exception, SystemExit) as exc:  # sys.exit() in a task fails the task, not its process
        # What the task reported before it failed still tells how far it got.
        return Outcome(False, f"{type(exc).__name__}: {exc}", result=dict(ctx.result) or None,
                       traceback=_traceback(exc))


def _traceback(exc: BaseException) -> str:
    from tradeul_maint.redact import scrub

    text = scrub("".join(traceback.format_exception(exc)))
    return text if len(text) <= TRACEBACK_LIMIT else "..." + text[-TRACEBACK_LIMIT:]
