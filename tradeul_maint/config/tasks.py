"""The [[tasks]] tables: each task's kind, command, parameters, retries and waits, checked.

And the graph of them checked whole: names, dependencies, cycles, a delete that could reach the
tool's own keys (built-in parameters are builtin_params.py's)."""

from __future__ import annotations

import re
from typing import Any

from tradeul_maint.base.errors import ConfigError
from tradeul_maint.config.settings import DEFAULT_TASK_TIMEOUT, MAIN_JOB, Job, RedisSettings, TaskSpec
from tradeul_maint.config.values import only_keys, parse_seconds, typed


TASK_NAME = re.compile(r"^[a-z0-9_-]+$")


def read_tasks(raw: Any, require_tasks: bool, where: str = "") -> tuple[TaskSpec, ...]:
    """`[[tasks]]`, or a job's `[[jobs.NAME.tasks]]` (`where` "jobs.NAME.", which every message names)."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}tasks must be written as [[{where}tasks]] tables")
    if not raw and require_tasks:
        raise ConfigError("no tasks configured: add at least one [[tasks]] table (or a [jobs.NAME] with tasks)")
    tasks: list[TaskSpec] = []
    for index, t in enumerate(raw, start=1):
        if not isinstance(t, dict):
            raise ConfigError(f"{where}task #{index} must be a table")
        name = t.get("name")
        only_keys(t, "tasks", None, f"in {where}task {name!r}" if isinstance(name, str) and name else
              f"in {where}task #{index}")
        if not isinstance(name, str) or not TASK_NAME.match(name):
            raise ConfigError(f"{where}task #{index}: name = {name!r}: expected lowercase letters, digits, '_' or '-'")
        tasks.append(_task(t, name, f"{where}tasks.{name}"))
    _check_graph(tasks, where)
    check_catchup(tasks, where)
    return tuple(tasks)


def _task(t: dict, name: str, section: str) -> TaskSpec:
    kinds = [k for k in ("command", "python", "builtin") if k in t]
    if len(kinds) != 1:
        raise ConfigError(f"[{section}] needs exactly one of command, python or builtin (has {kinds or 'none'})")
    command = _argv(t, section, "command")
    python = typed(t, section, "python", str, None)
    if python is not None and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", python):
        raise ConfigError(f"[{section}] python = {python!r}: expected \"package.module:callable\"")
    builtin = typed(t, section, "builtin", str, None)
    params = typed(t, section, "params", dict, {})
    if builtin is not None:
        from tradeul_maint.config.builtin_params import validate_builtin  # only a config with built-ins pays

        validate_builtin(builtin, params, section)
    after = typed(t, section, "after", list, [])
    if not all(isinstance(a, str) for a in after):
        raise ConfigError(f"[{section}] after must be a list of task names")
    catchup = typed(t, section, "catchup", str, "all")
    if catchup not in ("all", "latest"):
        raise ConfigError(f"[{section}] catchup = {catchup!r}: expected \"all\" or \"latest\"")
    retries = typed(t, section, "retries", int, 0)
    if retries < 0:
        raise ConfigError(f"[{section}] retries = {retries}: must be 0 or more")
    wait_for = _argv(t, section, "wait_for")
    if "wait_timeout" in t and wait_for is None:
        raise ConfigError(f"[{section}] wait_timeout without wait_for: it bounds how long the task waits for the "
                          "data its wait_for probe looks for")
    return TaskSpec(
        name=name,
        command=command,
        python=python,
        builtin=builtin,
        params=params,
        after=tuple(after),
        timeout=_timeout(t, section),
        retries=retries,
        retry_delay=parse_seconds(t["retry_delay"], f"[{section}] retry_delay") if "retry_delay" in t else 30.0,
        catchup=catchup,
        market_closed_only=typed(t, section, "market_closed_only", bool, False),
        wait_for=wait_for,
        wait_timeout=parse_seconds(t["wait_timeout"], f"[{section}] wait_timeout") if "wait_timeout" in t else None,
        redis_env=typed(t, section, "redis_env", bool, False),
    )


def _argv(t: dict, section: str, key: str) -> tuple[str, ...] | None:
    """A `command` or `wait_for`: a non-empty list of non-empty strings, run without a shell."""
    if key not in t:
        return None
    argv = t[key]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise ConfigError(f"[{section}] {key} must be a non-empty list of strings (argv, no shell)")
    return tuple(argv)


def _timeout(t: dict, section: str) -> float | None:
    """The task's `timeout`: DEFAULT_TASK_TIMEOUT when it is left out, none when it is 0."""
    if "timeout" not in t:
        return DEFAULT_TASK_TIMEOUT
    if t["timeout"] in (0, "0") and not isinstance(t["timeout"], bool):
        return None
    return parse_seconds(t["timeout"], f"[{section}] timeout")


def protect_own_keys(jobs: tuple[Job, ...], redis: RedisSettings) -> None:
    """A delete pattern on the maintenance Redis that could match one of the tool's keys, any job's, is refused.

    An early, clear error: the guarantee is at run time, where `redis.delete_keys` skips
    every key under every job's prefix whatever its pattern and target (run/builtins.py).
    """
    from tradeul_maint.redisio.keys import Keys
    from tradeul_maint.redisio.redisglob import can_match_key_starting_with

    namespaces = dict.fromkeys(Keys(p).namespace for p in (redis.key_prefix, *(j.key_prefix for j in jobs)))
    for job in jobs:
        where = "" if job.name == MAIN_JOB else f"jobs.{job.name}."
        for task in job.tasks:
            if task.builtin != "redis.delete_keys" or task.params.get("url"):
                continue
            for pattern in task.params.get("patterns", []):
                for namespace in namespaces:
                    if can_match_key_starting_with(pattern, namespace):
                        raise ConfigError(f"[{where}tasks.{task.name}] params.patterns: {pattern!r} would delete "
                                          f"this tool's own state (it can match keys under {namespace}, the status "
                                          "documents and the lock): narrow the pattern")


def check_catchup(tasks: list[TaskSpec] | tuple[TaskSpec, ...], where: str = "") -> None:
    """A task run for every session must not wait for one run only for the newest.

    For an older session the "latest" task is skipped, so the dependent could never run
    there and the session could never be done: refused here, with what to write instead.
    Checking the direct edges is enough: any chain from an "all" task to a "latest" one
    has such an edge where it first reaches a "latest" task. The other direction ("latest"
    after "all", a snapshot after the loads) is valid.
    """
    policy = {t.name: t.catchup for t in tasks}
    for task in tasks:
        for dep in task.after:
            if task.catchup == "all" and policy.get(dep) == "latest":
                raise ConfigError(f"[{where}tasks.{task.name}] after = {list(task.after)}: {task.name} runs for every "
                                  f"session (catchup = \"all\") but {dep} only for the newest (catchup = "
                                  f"\"latest\"), so older sessions could never run {task.name}: set catchup = "
                                  f"\"latest\" on {task.name} too, or drop {dep} from its after")


def _check_graph(tasks: list[TaskSpec], where: str = "") -> None:
    names: set[str] = set()
    for task in tasks:
        if task.name in names:
            raise ConfigError(f"duplicate task name '{task.name}'{' in [' + where.rstrip('.') + ']' if where else ''}: "
                              "task names must be unique")
        names.add(task.name)
    for task in tasks:
        for dep in task.after:
            if dep not in names:
                raise ConfigError(f"[{where}tasks.{task.name}] after = {list(task.after)}: unknown task '{dep}'")
            if dep == task.name:
                raise ConfigError(f"[{where}tasks.{task.name}] depends on itself")
    # Depth-first search for a cycle, reporting the path an operator has to break.
    after = {t.name: t.after for t in tasks}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in after[name]:
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [name, dep]
                raise ConfigError(f"dependency cycle: {' -> '.join(cycle)}: remove one 'after' entry")
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in after:
        if name not in state:
            visit(name, [name])
