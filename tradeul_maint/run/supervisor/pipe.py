"""What the supervisor and an attempt's reaper say to each other over their pipes, and how it travels.

Supervisor -> reaper: Prepare (fork the next main process now), Start (run.messages), StopAttempt;
reaper -> supervisor: a Report once no process of its attempt is left. Each message is a pickle with
its length first, written whole.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any

from tradeul_maint.run.messages import AttemptId


@dataclass(frozen=True)
class Prepare:
    """Supervisor -> reaper: fork the next main process now (another attempt has just started, so the runner is
    not between two tasks, where the fork would compete with it for a core)."""


@dataclass(frozen=True)
class StopAttempt:
    """Supervisor -> reaper: stop this attempt (if it is still the one running)."""

    attempt: AttemptId
    kill_now: bool = False  # SIGKILL what is left now, not after the grace period


@dataclass(frozen=True)
class Report:
    """Reaper -> supervisor, once no process of its attempt is left."""

    returncode: int | None  # the main process's; None when it never started
    output: str
    result: Any  # a Python task's outcome as JSON, or {"exec_error": ...} for a command that did not start
    left_running: int  # processes that outlived the main process and were stopped


def write_message(fd: int, message: Any) -> None:
    """A pickle, its length first, whole (blocking until the reader took it)."""
    data = pickle.dumps(message)
    view = memoryview(len(data).to_bytes(8, "big") + data)
    while view:
        view = view[os.write(fd, view):]


def read_message(fd: int) -> Any:
    """What `write_message` wrote, or None when the pipe ended first (the writer died or closed it)."""
    data = bytearray()
    while chunk := os.read(fd, 1 << 20):
        data += chunk
        whole, message, _ = take_message(data)
        if whole:
            return message
    return None


def take_message(buffer: bytearray) -> tuple[bool, Any, bytearray]:
    """(True, the first whole message of `write_message` in `buffer`, what follows it), else (False, None, buffer)."""
    if len(buffer) < 8:
        return False, None, buffer
    end = 8 + int.from_bytes(buffer[:8], "big")
    if len(buffer) < end:
        return False, None, buffer
    return True, pickle.loads(buffer[8:end]), buffer[end:]
