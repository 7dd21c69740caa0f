"""The runner's side of its supervisor (supervisor/): fork it, start and stop attempts, hear how they ended.

The supervisor is forked from the runner once its imports are done and before any thread
of the run exists (the lock's renewal, the live view), so a run with work pays a fork
rather than a fresh interpreter. The runner watches it as it watches the lease: it pings
it every PING_SECONDS, and a supervisor that stops answering (stopped by a task, hung)
for ANSWER_SECONDS, or is found stopped, is continued and killed; its reapers then stop
their attempts (their PR_SET_PDEATHSIG), and the runner waits for that, and stops what is
left of the run by its record (run/containment.py), before it lets the lock go.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable

from loguru import logger

from tradeul_maint.base import envvars, proc
from tradeul_maint.base.errors import TaskProcessesLostError
from tradeul_maint.config.settings import Settings
from tradeul_maint.run import containment
from tradeul_maint.run.containment import RecordedRun, RunRecord
from tradeul_maint.run.gate import StepGate
from tradeul_maint.run.messages import AttemptId, Bye, Ended, LeaseHeld, Ping, Pong, Request, Start, Stop, StopAll
from tradeul_maint.state.lock import RunLock

# How long a stop may take beyond the grace period ([run] stop_grace_seconds, after which
# what is left gets SIGKILL): what SIGKILL cannot end at once (uninterruptible sleep).
STOP_MARGIN = 20.0
PING_SECONDS = 1.0  # how often the runner asks its supervisor whether it is there
ANSWER_SECONDS = 15.0  # silent this long: hung (longer than its slowest Redis call; one found stopped: at once)


@dataclass(frozen=True)
class Sinks:
    """The runner's log sinks, which the supervisor installs again for itself (logs.installed)."""

    directory: Path | None
    verbose: bool
    quiet: bool


class TaskProcesses:
    """The runner's handle on its supervisor: start and stop attempts, and hear when they have ended.

    `events` waits on the socket (a signal interrupts the wait within `timeout`); `close` says
    goodbye and waits for the supervisor to have stopped everything and exited.
    """

    def __init__(self, settings: Settings, run_id: str, lock_key: str, redis: dict[str, Any] | None, sinks: Sinks):
        """`redis` is where the run's Redis is (`task_redis`)."""
        from tradeul_maint.run.supervisor import server
        from tradeul_maint.run.supervisor.attempt import Shared

        self.grace = settings.run.stop_grace_seconds
        self.run_id = run_id
        self.containment = containment.detect(settings.run.containment)
        self.record = RunRecord.create(settings.state_dir, run_id, lock_key, self.containment)
        if self.record is None:
            logger.bind(state_dir=str(settings.state_dir), console=False).warning("process_record_unavailable")
        cgroup = self.record.cgroup if self.record is not None else None
        self.gate = StepGate()  # before the fork: the supervisor, its reapers and their tasks share it
        shared = Shared(run_id, settings, self.grace, self.record, None, task_redis(redis), redis, cgroup,
                        watch_identities=self.record is not None and cgroup is None, gate=self.gate)
        here, there = socket.socketpair()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the supervisor: never returns
            server.serve(Connection(there.detach()), shared, here, sinks)
        there.close()
        if self.record is not None:
            self.record.close()  # the supervisor's copy holds the record's flock; the runner's must not
        self.pid = pid
        self.conn = Connection(here.detach())
        self.closed = False
        self._seq = 0
        self._asked: dict[int, float] = {}  # pings not answered yet: seq -> when sent (monotonic)
        self._next_ping = time.monotonic() + PING_SECONDS

    def lease_held(self, lock: RunLock) -> None:
        self._send(LeaseHeld(lock.key, lock.token, lock.lease))

    def start(self, attempt: AttemptId, request: Request, gated: bool = True) -> None:
        """Ask for the attempt; when `gated`, its task's own code waits until the next `open_gate` (run/gate.py)."""
        self._send(Start(attempt, request, self.gate.next if gated else 0))

    def open_gate(self) -> None:
        """The step is written: the attempts asked for since the last call may run."""
        self.gate.open()

    def stop(self, attempt: AttemptId, why: str) -> None:
        self._send(Stop(attempt, why))

    def stop_all(self, why: str) -> None:
        self._send(StopAll(why))

    def _send(self, message: Any) -> None:
        try:
            self.conn.send(message)
        except OSError:
            pass  # the supervisor is gone: its reapers stopped their attempts before they went

    def events(self, timeout: float) -> list[Ended]:
        """What the supervisor said within `timeout` seconds; [] when nothing.

        TaskProcessesLostError: it died, or stopped answering and was killed.
        """
        found: list[Ended] = []
        try:
            self._read(found)  # first what is there: its answers to earlier pings among it
            self._watch()
            if not found and self.conn.poll(min(timeout, PING_SECONDS)):  # wait only when nothing came yet
                self._read(found)
        except (EOFError, OSError):
            self._reap(block=True)
            raise TaskProcessesLostError("the run's supervisor process died (was it killed?): the tasks it ran "
                                         "are recorded as not completed and run again next time") from None
        return found

    def _read(self, found: list[Ended]) -> None:
        while self.conn.poll(0):
            message = self.conn.recv()
            if isinstance(message, Ended):
                found.append(message)
            elif isinstance(message, Pong):
                self._asked = {seq: at for seq, at in self._asked.items() if seq > message.seq}

    def _watch(self) -> None:
        """Ping when it is time to; a supervisor found stopped, or silent for ANSWER_SECONDS, is killed."""
        now = time.monotonic()
        if self._asked:
            waiting = now - min(self._asked.values())
            found = proc.stat(self.pid) if waiting >= PING_SECONDS else None
            if waiting >= ANSWER_SECONDS or (found is not None and found.state == "T"):
                how = "was stopped (SIGSTOP)" if found is not None and found.state == "T" else \
                    f"did not answer for {waiting:.1f}s"
                logger.bind(run_id=self.run_id, pid=self.pid, how=how, console=False).error("supervisor_not_answering")
                self._kill()
                raise TaskProcessesLostError(f"the run's supervisor {how} (by a task?): it was killed and its tasks "
                                             "stopped; they are recorded as not completed and run again next time")
        if now >= self._next_ping:
            self._seq += 1
            self._asked[self._seq] = now
            self._next_ping = now + PING_SECONDS
            self._send(Ping(self._seq))

    def _kill(self) -> None:
        proc.signal_all([self.pid], signal.SIGCONT)
        proc.signal_all([self.pid], signal.SIGKILL)
        self._reap(block=True)

    def _reap(self, block: bool) -> bool:
        """True once the supervisor has exited (and is reaped)."""
        try:
            pid, _ = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return True
        return pid != 0

    def close(self) -> bool:
        """Goodbye: True once the supervisor has exited and no process of the run is left."""
        if self.closed:
            return True
        self.closed = True
        self._send(Bye())
        deadline = time.monotonic() + self.grace + STOP_MARGIN
        exited = False
        while not exited and time.monotonic() < deadline:
            try:  # its end of the socket closes when it exits
                if self.conn.poll(max(0.0, deadline - time.monotonic())):
                    self.conn.recv()
                    continue
            except (EOFError, OSError):
                pass
            exited = self._reap(block=False) or self._reap_soon()
        self.conn.close()
        if not exited:
            logger.bind(run_id=self.run_id, pid=self.pid, console=False).error("supervisor_did_not_exit")
            self._kill()
        return not self.stop_remaining()

    def _reap_soon(self) -> bool:
        """The socket is closed: the supervisor is exiting, or gave its socket away and is stuck."""
        for _ in range(200):
            if self._reap(block=False):
                return True
            time.sleep(0.005)
        return False

    def stop_remaining(self) -> list[int]:
        """Once the supervisor is gone: stop what is left of this run (by its record, and by its run id)."""
        left = []
        if self.record is not None and (run := RecordedRun.read(self.record.path)) is not None:
            left = containment.stop_run(run, self.grace, STOP_MARGIN, wait=True)
            if not run.alive(reapers=True):
                self.record.remove()
        left += stop_leftovers(self.run_id, self.grace)
        if left:
            logger.bind(run_id=self.run_id, pids=sorted(set(left)), console=False).warning("leftover_processes_stopped")
        return [pid for pid in left if proc.alive(pid)]


def stop_leftovers(run_id: str, grace: float) -> list[int]:
    """Stop every process on this host whose environment names `run_id` (TRADEUL_MAINT_RUN_ID); returns them.

    A process is recognised by its environment, never by a pid recorded elsewhere that may
    have been reused; one that reset its environment (`env -i`, sudo) is found by the run's
    record instead (run/containment.py).
    """
    found = proc.with_environment(envvars.RUN_ID, run_id)
    if found:
        proc.stop_and_wait(lambda: [pid for pid in found if proc.alive(pid)], grace, STOP_MARGIN)
    return found


def task_redis(target: dict[str, Any] | None) -> Callable[[], Any] | None:
    """What makes a client on the maintenance Redis for a Python task or the lease watch, decided once.

    `target` is `{"unix_socket": ...}` or `{"url": ..., "password_file": ..., "cluster": ...}`:
    the password file is read once, and whether the server is a cluster is known, so a
    task's process makes its client without a round trip.
    """
    if not target:
        return None
    from tradeul_maint.redisio.connection import connect, read_password, socket_client

    if target.get("unix_socket"):
        return partial(socket_client, target["unix_socket"])
    password_file = target.get("password_file")
    password = read_password(Path(password_file)) if password_file else None
    return partial(connect, target["url"], password, target.get("cluster"))
