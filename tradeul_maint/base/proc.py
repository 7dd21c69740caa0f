"""Processes on this host: the one reader of /proc, and the one way to stop a set of processes.

A process is named by its `Identity`: its pid and its start time (clock ticks since boot,
field 22 of /proc/PID/stat). A pid alone may have been reused by the time anyone acts on
it; a pid with the same start time on the same boot is the same process.

Stopping is always the same three steps, whoever stops what (a task's processes, what a
task left behind, the processes of a run that died): SIGTERM and SIGCONT at once (a
stopped process would never see the SIGTERM), then SIGKILL to whatever is left once the
grace period has passed. `Stopping` is those steps for an event loop; `stop_and_wait`
blocks until the processes are gone.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Callable, Iterable

ZOMBIE_STATES = (b"Z", b"X")


@dataclass(frozen=True)
class Identity:
    """A process as it can be found again later: a pid and its start time."""

    pid: int
    start: int

    def line(self) -> str:
        return f"{self.pid} {self.start}\n"

    @classmethod
    def parse(cls, line: str) -> Identity | None:
        try:
            pid, start = line.split()
            return cls(int(pid), int(start))
        except ValueError:
            return None


@dataclass(frozen=True)
class Stat:
    """What the runner needs of /proc/PID/stat."""

    pid: int
    state: str  # R, S, D, T (stopped), Z (zombie)...
    ppid: int
    pgrp: int
    session: int
    start: int

    @property
    def alive(self) -> bool:
        return self.state.encode() not in ZOMBIE_STATES

    @property
    def identity(self) -> Identity:
        return Identity(self.pid, self.start)


def stat(pid: int) -> Stat | None:
    """The process's stat line, parsed; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields follow its last ")".
    fields = raw.rpartition(b")")[2].split()
    try:
        return Stat(pid, fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie awaiting its reaper."""
    found = stat(pid)
    return found is not None and found.alive


def identity(pid: int) -> Identity | None:
    found = stat(pid)
    return found.identity if found is not None and found.alive else None


def still(ident: Identity) -> bool:
    """Whether this very process (not another with its pid) is alive."""
    found = stat(ident.pid)
    return found is not None and found.alive and found.start == ident.start


def table() -> dict[int, Stat]:
    """Every process of the host, by pid (one read of /proc)."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (s := stat(int(entry.name))) is not None:
            found[s.pid] = s
    return found


def descendants(root: int, processes: dict[int, Stat] | None = None) -> list[Stat]:
    """Every live process below `root` in the parent tree, whatever its session or group."""
    processes = table() if processes is None else processes
    children: dict[int, list[Stat]] = {}
    for s in processes.values():
        children.setdefault(s.ppid, []).append(s)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child.alive:
                found.append(child)
            todo.append(child.pid)
    return found


def with_environment(name: str, value: str) -> list[int]:
    """Live processes whose environment holds `name=value` (as their program started)."""
    needle = f"\0{name}={value}\0".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = b"\0" + f.read()
        except OSError:
            continue
        if needle in environ and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def own_cgroup() -> str | None:
    """This process's cgroup v2 path (from /proc/self/cgroup), None without a cgroup v2 hierarchy.

    OSError when /proc cannot be read."""
    with open("/proc/self/cgroup") as f:
        return next((line[3:].rstrip("\n") for line in f if line.startswith("0::")), None)


def cgroup2_mounts() -> list[tuple[str, str]]:
    """Where cgroup v2 is mounted, as (root within the hierarchy, mount point); OSError when /proc cannot be read."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            before, _, after = line.partition(" - ")
            fields = before.split()
            if after.split()[:1] == ["cgroup2"] and len(fields) >= 5:
                found.append((_unescape(fields[3]), _unescape(fields[4])))
    return found


def _unescape(text: str) -> str:
    """mountinfo writes spaces and the like as octal escapes (\\040)."""
    return text.encode().decode("unicode_escape") if "\\" in text else text


def boot_id() -> str:
    """This boot of this host: identities recorded before a reboot name nothing any more."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


# --- stopping ------------------------------------------------------------------------------


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:  # gone already, or no longer ours
            pass


@dataclass
class Stopping:
    """One stop of a set of processes, advanced by the loop that owns them: TERM now, KILL at `kill_at`."""

    why: str
    kill_at: float  # monotonic

    @classmethod
    def begin(cls, why: str, grace: float, pids: Iterable[int]) -> Stopping:
        pids = list(pids)
        signal_all(pids, signal.SIGTERM)
        signal_all(pids, signal.SIGCONT)  # a stopped process would never see the SIGTERM
        return cls(why, time.monotonic() + grace)

    def hurry(self, grace: float) -> None:
        """SIGKILL within `grace` from now, if that is sooner."""
        self.kill_at = min(self.kill_at, time.monotonic() + grace)

    @property
    def due(self) -> bool:
        return time.monotonic() >= self.kill_at

    def advance(self, pids: Iterable[int]) -> None:
        """SIGKILL whatever is given once the grace period is over (call again: new processes may appear)."""
        if self.due:
            signal_all(pids, signal.SIGKILL)


def stop_and_wait(find: Callable[[], list[int]], grace: float, give_up: float, why: str = "") -> list[int]:
    """Stop what `find` returns (asked again and again, as processes may fork), and wait until none is left.

    SIGTERM and SIGCONT, then SIGKILL after `grace` seconds; returns what is still alive
    `give_up` seconds after the SIGKILL (what not even SIGKILL ends at once: uninterruptible
    sleep), [] when everything has gone.
    """
    pids = find()
    if not pids:
        return []
    stopping = Stopping.begin(why, grace, pids)
    deadline = stopping.kill_at + give_up
    while pids and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = find()
        if stopping.due:
            stopping.advance(pids)
    return pids
