"""The step gate: a task's own code starts only once the step that started it is in Redis.

Each scheduling step records its transitions (this task in progress, the one before it
completed) in one write to Redis, and no task may run before the write that says it runs:
a task reads the document with one GET and finds itself in it, and a write that fails or
is in doubt starts nothing. The write takes about a millisecond; a task's start request
takes several to reach its process (runner, supervisor, reaper, the task's process). So
the runner asks for the start first and writes while the request travels and the process
gets ready; the process then waits at the gate, and the runner opens it once the write is
in: one wake-up, not another trip along the chain.

The gate is one 32-bit counter in memory the runner maps before it forks its supervisor, so
every reaper and task process shares it: the number of the last step written. A start
request carries the step it waits for; the process waits on the counter with a futex
(Linux), and the runner wakes every waiter when it moves the counter. A process killed while
it waits holds nothing, and one past the gate makes the page inaccessible in its own memory
(`leave`): a task cannot move the counter for the tasks after it. Where the futex's system
call number is not known here, a waiter polls every 0.2 ms instead.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import time

_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine().lower())
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1  # not the _PRIVATE forms: the counter is shared between processes
_WAKE_ALL = 2**31 - 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_syscall():
    try:
        return ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None


_SYSCALL = _load_syscall() if _SYS_FUTEX is not None else None
try:
    _MPROTECT = ctypes.CDLL(None, use_errno=True).mprotect
except (OSError, AttributeError):
    _MPROTECT = None


class StepGate:
    """Made in the runner before it forks the supervisor; `open` there, `wait` in a task's process."""

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous and shared: every process forked from here sees it
        self._word = ctypes.c_int32.from_buffer(self._memory)
        self._address = ctypes.addressof(self._word)
        self.next = 1  # the step the tasks asked for now wait for (the runner's count)

    @property
    def opened(self) -> int:
        """The last step written."""
        return self._word.value

    def open(self) -> None:
        """The runner's step is written: every task asked for until now may run."""
        self._word.value = self.next
        self.next += 1
        if _SYSCALL is not None:
            _SYSCALL(_SYS_FUTEX, ctypes.c_void_p(self._address), _FUTEX_WAKE, _WAKE_ALL, None, None, 0)

    def leave(self) -> None:
        """In a task's process past the gate: the page is made inaccessible here, so that nothing the task runs
        (its code, its children) can move the counter other tasks wait on."""
        if _MPROTECT is not None:
            _MPROTECT(ctypes.c_void_p(self._address), mmap.PAGESIZE, 0)  # PROT_NONE

    def wait(self, step: int) -> None:
        """In a task's process: until step `step` is written (the runner stops the process if it never is)."""
        while (seen := self._word.value) < step:
            if _SYSCALL is None:
                time.sleep(0.0002)
                continue
            timeout = _Timespec(1, 0)  # look again now and then, whatever happened to a wake-up
            _SYSCALL(_SYS_FUTEX, ctypes.c_void_p(self._address), _FUTEX_WAIT, seen, ctypes.byref(timeout), None, 0)
