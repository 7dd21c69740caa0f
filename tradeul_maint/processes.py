"""The runner's side of its supervisor (supervisor.py): start it, start and stop attempts, hear how they ended.

And the last line of defence when a run's supervisor was killed along with its runner:
`stop_leftovers` finds that run's processes on this host by the run id in their environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from tradeul_maint.errors import TaskProcessesLostError
from tradeul_maint.supervisor import RUN_ID_VAR, STOP_GRACE

# How long a stop may take beyond the grace period ([run] stop_grace_seconds, after which the
# supervisor SIGKILLs what is left): what SIGKILL cannot end at once (uninterruptible sleep).
STOP_MARGIN = 20.0


class TaskProcesses:
    """The runner's handle on its supervisor: start and stop attempts, and hear when they have ended.

    `events` waits on the socket (a signal interrupts the wait within `timeout`); `close` says
    goodbye and waits for the supervisor to have stopped everything and exited.
    """

    def __init__(self, hello: dict[str, Any]):
        here, there = socket.socketpair()
        env = {**os.environ, RUN_ID_VAR: hello["run_id"]}
        self.proc = subprocess.Popen([sys.executable, "-m", "tradeul_maint.supervisor", str(there.fileno())],
                                     pass_fds=(there.fileno(),), stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        there.close()
        self.conn = Connection(here.detach())
        self.conn.send(hello)
        self.grace = float(hello.get("grace", STOP_GRACE))

    def start(self, attempt_id: str, request: dict[str, Any]) -> None:
        self._send({"op": "start", "id": attempt_id, **request})

    def stop(self, attempt_id: str, why: str) -> None:
        self._send({"op": "stop", "id": attempt_id, "why": why})

    def stop_all(self, why: str) -> None:
        self._send({"op": "stop_all", "why": why})

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.conn.send(message)
        except OSError:
            pass  # the supervisor is gone: it stopped its tasks before it went

    def events(self, timeout: float) -> list[dict[str, Any]]:
        """What the supervisor said within `timeout` seconds; [] when nothing. EOFError: it died."""
        found = []
        try:
            ready = self.conn.poll(timeout)
            while ready and self.conn.poll(0):
                message = self.conn.recv()
                if message["op"] == "ended":
                    found.append(message)
        except (EOFError, OSError):
            raise TaskProcessesLostError("the run's supervisor process died (was it killed?): the tasks it ran "
                                         "are recorded as not completed and run again next time") from None
        return found

    def close(self) -> bool:
        """Goodbye: True once the supervisor has exited (every task process is gone)."""
        self._send({"op": "bye"})
        try:
            self.proc.wait(self.grace + STOP_MARGIN)
        except subprocess.TimeoutExpired:
            return False
        finally:
            self.conn.close()
        return True


def stop_leftovers(run_id: str, grace: float = STOP_GRACE) -> list[int]:
    """Stop every process on this host that another run started (its environment names `run_id`).

    Used when a runner finds a task left in progress by a run that died: its supervisor
    normally stopped them already, but not if it was killed too. A process is recognised by
    its environment, never by a recorded pid that may have been reused. Returns the pids found.
    """
    needle = f"\0{RUN_ID_VAR}={run_id}\0".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = b"\0" + f.read()
        except OSError:
            continue
        if needle in environ:
            found.append(int(entry.name))
    for sig in (signal.SIGTERM, signal.SIGCONT):
        _kill_all(found, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in found):
        time.sleep(0.05)
    _kill_all([pid for pid in found if _alive(pid)], signal.SIGKILL)
    return found


def _kill_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except OSError:
        return False
