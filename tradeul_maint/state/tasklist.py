"""The task list a session's latest cycle ran with, and how this host's configuration differs from it.

Hosts of a fleet can run different configurations for a while (a rollout not finished, one
host forgotten). Each cycle records its host's configured tasks in the status document
(`task_list`: name -> a fingerprint of the task's definition), so `status` and `check` can
say, task by task, where this host's configuration differs from the one that completed or
is running a session: configured only here, only there, or defined differently.

A session done by a host without a task stays done for a host that has it: adding a task
does not reopen done sessions (`run --date D --task NAME` runs it for D).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields

from tradeul_maint.config.settings import TaskSpec


def fingerprint(task: TaskSpec) -> str:
    """A short digest of everything that defines the task but its name: equal on hosts that agree.

    Fields left at their default are left out, so a version that adds a field (with a
    default) gives the same tasks the same fingerprints as the version before it.
    """
    defaults = TaskSpec(name=task.name)
    definition = {f.name: getattr(task, f.name) for f in fields(task)
                  if f.name != "name" and getattr(task, f.name) != getattr(defaults, f.name)}
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def task_list(tasks: tuple[TaskSpec, ...]) -> dict[str, str]:
    return {task.name: fingerprint(task) for task in tasks}


@dataclass(frozen=True)
class Difference:
    task: str
    how: str  # "only here", "only there", "defined differently"

    def describe(self) -> str:
        return f"{self.task} {self.how}"


ONLY_HERE, ONLY_THERE, DIFFERENT = "configured only here", "configured only there", "defined differently"


def differences(here: dict[str, str], recorded: dict[str, str] | None) -> tuple[Difference, ...]:
    """Task by task, in this host's order then the recorded one's; () when nothing was recorded."""
    if recorded is None:
        return ()
    found = [Difference(name, ONLY_HERE if name not in recorded else DIFFERENT)
             for name, digest in here.items() if recorded.get(name) != digest]
    return tuple(found + [Difference(name, ONLY_THERE) for name in recorded if name not in here])


def summary(diffs: tuple[Difference, ...], runner: str | None, running: bool = False) -> str:
    """`ran with another task list (host h2): b configured only here; c defined differently`."""
    host = (runner or "").rpartition(":")[0] or "an unknown host"
    return f"{'runs' if running else 'ran'} with another task list (host {host}): " + \
        "; ".join(d.describe() for d in diffs)
