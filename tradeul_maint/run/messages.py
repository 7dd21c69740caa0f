"""What the runner and its supervisor say to each other: these messages and nothing else.

They travel as pickles over a socket pair (`multiprocessing.connection`) between the runner
and the supervisor it forked, so both sides share these definitions.

    runner -> supervisor   LeaseHeld, Start, Stop, StopAll, Ping, Bye
    supervisor -> runner   Ended, Pong

An attempt is named by an `AttemptId` (session, task, its number in the cycle); `Ended` is
sent only once no process of the attempt is left.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from tradeul_maint.config.settings import TaskSpec
from tradeul_maint.state.lease import Lease


@dataclass(frozen=True)
class AttemptId:
    session: dt.date
    task: str
    number: int  # 1 for the task's first attempt in its cycle

    def __str__(self) -> str:
        return f"{self.session.isoformat()}:{self.task}:{self.number}"


@dataclass(frozen=True)
class CommandRequest:
    """Exec `argv` (no shell) with the tool's environment plus `env`."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    redis_env: bool = False  # the task's environment gets the Redis URL (run/taskenv.py)


@dataclass(frozen=True)
class PythonRequest:
    """Call the task's callable (or built-in) with a context for `session`."""

    spec: TaskSpec
    session: dt.date
    run_id: str
    env: Mapping[str, str] = field(default_factory=dict)  # set in its process's os.environ, as a command's
    redis_env: bool = False


Request = Union[CommandRequest, PythonRequest]


# --- runner -> supervisor -----------------------------------------------------------------


@dataclass(frozen=True)
class LeaseHeld:
    """The run lock is taken: watch its lease from now on (the supervisor is forked before it is)."""

    key: str
    token: str
    lease: Lease


@dataclass(frozen=True)
class Start:
    attempt: AttemptId
    request: Request
    gate: int = 0  # the step its process waits for before the task's own code runs (run/gate.py); 0: none


@dataclass(frozen=True)
class Stop:
    attempt: AttemptId
    why: str  # recorded as the attempt's error, e.g. "timed out after 30s"


@dataclass(frozen=True)
class StopAll:
    """Stop every attempt and start none any more."""

    why: str


@dataclass(frozen=True)
class Ping:
    seq: int


@dataclass(frozen=True)
class Bye:
    """The run is over: stop what is left, and exit once no process of any attempt is left."""


# --- supervisor -> runner -----------------------------------------------------------------


@dataclass(frozen=True)
class Ended:
    """An attempt is over: its main process exited and no other process of it is left."""

    attempt: AttemptId
    returncode: int | None = None  # the main process's (negative: killed by that signal); None if never started
    output: str = ""  # the tail of its stdout and stderr
    result: Any = None  # a Python task's outcome (Outcome.to_json), or {"exec_error": errno} for a command
    stopped: str | None = None  # why it was stopped, when it was


@dataclass(frozen=True)
class Pong:
    seq: int
