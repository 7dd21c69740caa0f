"""How a run keeps hold of every process its tasks start, so that none outlives its attempt unseen.

Every attempt has a reaper of its own (supervisor/reaper.py): a child subreaper, so
whatever the attempt starts and leaves orphaned, in its process group or not (`setsid`, a
double fork), is reparented to it, and the attempt is over only once the reaper has no
child left. Where this process's cgroup v2 is delegated to it and writable (a systemd
service with `Delegate=yes`, a container with a writable cgroup filesystem, a host's root
cgroup), each attempt also gets a cgroup of its own, under one per run:
`<own cgroup>/tradeul-maint.<run id>/<session>.<task>.<n>`; a process stays in it
whatever it does to its parents.

Each run also leaves a record under the state directory (`processes/<run id>`): a header
(JSON: run id, lock key, host, boot id, the run's cgroup), then the identity (pid and
start time, see base/proc.py) of each task process and reaper as they are seen. The supervisor
holds a shared flock on it, and its reapers with it, while any of them lives. A later runner on the same host reads the
records of runs that died (`stop_dead_runs`: its runner, supervisor and reapers all
killed at once) and stops what is left of them, whatever environment those processes
have, before it runs anything. Without a cgroup, a process started in the last
`RECORD_SECONDS` before such a kill may not be in the record yet. Nothing of this reaches
another host.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from tradeul_maint.base import proc
from tradeul_maint.base.proc import Identity

RUNS_DIR = "processes"  # under the state directory
CGROUP_PREFIX = "tradeul-maint."
RECORD_SECONDS = 0.5  # how often the supervisor adds the processes it sees to the record (without a cgroup)


@dataclass(frozen=True)
class Containment:
    """What keeps each attempt's processes together on this host: a subreaper always, a cgroup v2 where delegated."""

    cgroup: Path | None  # the delegated cgroup v2 directory runs make theirs under; None: subreapers only
    reason: str  # why a cgroup is (not) used

    def describe(self) -> str:
        if self.cgroup is not None:
            return f"a cgroup v2 and a subreaper per attempt (cgroups under {self.cgroup}: {self.reason})"
        return f"a subreaper per attempt, no cgroup ({self.reason})"


def detect(mode: str = "auto") -> Containment:
    """The containment a run started now would use ([run] containment: "auto" or "subreaper")."""
    if mode == "subreaper":
        return Containment(None, '[run] containment = "subreaper"')
    directory, reason = _own_cgroup()
    return Containment(directory, reason)


def _own_cgroup() -> tuple[Path | None, str]:
    """This process's cgroup v2 directory when it may make cgroups below it, else None and why not."""
    try:
        path = proc.own_cgroup()
        mounts = proc.cgroup2_mounts()
    except OSError as exc:
        return None, f"cannot read /proc: {exc.strerror}"
    if path is None:
        return None, "this host has no cgroup v2 hierarchy"
    directory = None
    for root, point in mounts:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            directory = Path(point) / path[len(root):].lstrip("/")
            break
    if directory is None or not directory.is_dir():
        return None, f"its cgroup v2 ({path}) is not mounted here"
    if not (os.access(directory, os.W_OK) and os.access(directory / "cgroup.procs", os.W_OK)):
        return None, f"{directory} is not writable by this user (not delegated)"
    unit = next((part for part in path.split("/") if part.endswith((".service", ".scope"))), None)
    if unit is not None and not _delegated(directory):
        return None, f"{directory} is systemd's {unit}, which does not delegate it (Delegate=yes)"
    return directory, "delegated and writable"


def _delegated(directory: Path) -> bool:
    """systemd marks the cgroup of a unit with Delegate=yes (an extended attribute, systemd 251 and later)."""
    for name in ("trusted.delegate", "user.delegate"):
        try:
            if os.getxattr(directory, name) == b"1":
                return True
        except OSError:
            continue
    return False


# --- cgroups -------------------------------------------------------------------------------


def make_cgroup(directory: Path) -> Path | None:
    try:
        directory.mkdir()
        return directory
    except FileExistsError:
        return directory
    except OSError:
        return None


def join_cgroup(directory: Path) -> bool:
    """Move this process into the cgroup (its children follow it from now on)."""
    try:
        with open(directory / "cgroup.procs", "w") as f:
            f.write("0")
        return True
    except OSError:
        return False


def cgroup_pids(directory: Path | None) -> list[int]:
    """The processes in the cgroup and every cgroup below it.

    The tree may be removed while it is read (its run ends, another runner forgets it): a
    cgroup gone is one with no process, never an error (os.walk skips what vanished).
    """
    if directory is None:
        return []
    found = []
    for below, _, files in os.walk(directory):  # a task's process may have made cgroups of its own below
        if "cgroup.procs" in files:
            try:
                found += [int(line) for line in (Path(below) / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                continue
    return found


def remove_cgroup(directory: Path | None) -> bool:
    """Remove the cgroup and those below it, once they are empty; False when one is not empty yet.

    Another runner may be removing the same tree: what is already gone counts as removed.
    """
    if directory is None:
        return True
    gone = True
    for below, _, _ in os.walk(directory, topdown=False):  # deepest first
        try:
            os.rmdir(below)
        except FileNotFoundError:
            continue
        except OSError:
            gone = False
    return gone


# --- the run's record ----------------------------------------------------------------------


@dataclass
class RunRecord:
    """This run's record of its processes: the header, then identities appended as they are seen."""

    path: Path
    fd: int  # append-only, close-on-exec: no task process keeps it
    cgroup: Path | None  # the run's cgroup, when the containment has one

    @classmethod
    def create(cls, state_dir: Path, run_id: str, lock_key: str, containment: Containment) -> RunRecord | None:
        """None when the state directory cannot hold it: the run goes on, a double kill then is not covered."""
        directory = state_dir / RUNS_DIR
        cgroup = None
        if containment.cgroup is not None:
            cgroup = make_cgroup(containment.cgroup / f"{CGROUP_PREFIX}{run_id}")
        header = {"run_id": run_id, "lock": lock_key, "host": socket.gethostname(), "boot": proc.boot_id(),
                  "cgroup": str(cgroup) if cgroup else None, "pid": os.getpid()}
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(directory / run_id, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            os.write(fd, (json.dumps(header) + "\n").encode())
        except OSError:
            remove_cgroup(cgroup)
            return None
        return cls(directory / run_id, fd, cgroup)

    def note(self, identities: list[Identity], reaper: bool = False) -> None:
        """Add processes to the record (one write, appended whole)."""
        if identities and self.fd >= 0:
            suffix = " reaper" if reaper else ""
            try:
                os.write(self.fd, "".join(f"{i.pid} {i.start}{suffix}\n" for i in identities).encode())
            except OSError:
                pass

    def hold(self) -> None:
        """In the supervisor: a shared flock, kept by every reaper it forks, until the last of them exits."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH)
        except OSError:  # the record then cannot say whether the run lives: it says it does not
            pass

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            except OSError:
                pass

    def remove(self) -> bool:
        """After a run whose processes are all gone: the record and the run's cgroup go."""
        self.close()
        return _forget(RecordedRun.read(self.path))


@dataclass
class RecordedRun:
    """A run's record as a later runner reads it."""

    path: Path
    run_id: str
    lock: str
    host: str
    boot: str
    cgroup: Path | None
    tasks: list[Identity] = field(default_factory=list)
    reapers: list[Identity] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> RecordedRun | None:
        try:
            head, *lines = path.read_text().splitlines()
            header = json.loads(head)
            run = cls(path, str(header["run_id"]), str(header["lock"]), str(header["host"]), str(header["boot"]),
                      Path(header["cgroup"]) if header.get("cgroup") else None)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if run.cgroup is not None and run.cgroup.name != f"{CGROUP_PREFIX}{run.run_id}":
            run.cgroup = None  # only a run's own cgroup is ever emptied: never one a damaged record names
        for line in lines:
            pid, _, rest = line.partition(" ")
            start, _, kind = rest.partition(" ")
            if pid.isdigit() and start.isdigit():
                (run.reapers if kind == "reaper" else run.tasks).append(Identity(int(pid), int(start)))
        return run

    def alive(self, reapers: bool) -> list[int]:
        """Its processes still alive on this host (its reapers too when `reapers`)."""
        if self.boot != proc.boot_id():
            return []
        found = [i.pid for i in (self.tasks + (self.reapers if reapers else [])) if proc.still(i)]
        found += [pid for pid in cgroup_pids(self.cgroup) if proc.alive(pid)]
        return sorted(pid for pid in set(found) if pid > 1 and pid != os.getpid())


def _forget(run: RecordedRun | None) -> bool:
    if run is None:
        return True
    if not remove_cgroup(run.cgroup):
        return False
    try:
        run.path.unlink()
    except FileNotFoundError:
        pass
    return True


def stop_run(run: RecordedRun, grace: float, give_up: float, wait: bool) -> list[int]:
    """Stop what is left of a run, and forget it once nothing is: returns the pids it found alive.

    While its supervisor or reapers live (the flock is held) and a process of it is alive,
    they are stopping their attempts: with `wait` they get the grace period and `give_up`
    more to finish, then whatever is left of the run is stopped here, reapers included.
    Without `wait`, such a run (a live run of another job) is left alone.
    """
    try:
        fd = os.open(run.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        free = _try_flock(fd)
        if not free:
            if not wait or not run.alive(reapers=True):
                return []  # alive, or a supervisor with nothing left to stop (its runner paused): not ours
            deadline = time.monotonic() + grace + give_up
            while not free and (alive := run.alive(reapers=True)) and not _all_stopped(alive) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
                free = _try_flock(fd)
        found = run.alive(reapers=not free)
        if found:
            proc.stop_and_wait(lambda: run.alive(reapers=not free), grace, give_up)
        if free and not run.alive(reapers=True):
            _forget(run)
        return found
    finally:
        os.close(fd)


def _all_stopped(pids: list[int]) -> bool:
    """All stopped (SIGSTOP: a paused host, a frozen container): waiting for them to finish is waiting forever."""
    return all((found := proc.stat(pid)) is None or found.state == "T" for pid in pids)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def stop_dead_runs(state_dir: Path, lock_key: str, own_run_id: str, grace: float, give_up: float
                   ) -> dict[str, list[int]]:
    """Before a runner that holds the lock runs anything: stop what earlier runs on this host left alive.

    A run of the same lock that still has reapers is waited for (they are stopping its
    attempts); one of another lock that has them is alive and left alone. Returns the pids
    found alive, by run id.
    """
    directory = state_dir / RUNS_DIR
    try:
        paths = sorted(p for p in directory.iterdir() if p.name != own_run_id)
    except OSError:
        return {}
    host, found = socket.gethostname(), {}
    for path in paths:
        run = RecordedRun.read(path)
        if run is None or run.host != host:
            continue  # torn or foreign: another host's processes cannot be seen from here
        if pids := stop_run(run, grace, give_up, wait=run.lock == lock_key):
            found[run.run_id] = pids
    return found
