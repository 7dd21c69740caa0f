"""The supervisor: one small process per run that owns every task process, so none outlives its run.

The runner never starts a task itself. It starts this process (`python -m
tradeul_maint.supervisor`, in a session of its own, so a terminal's SIGINT or SIGHUP
reaches only the runner) and asks it, over a socket pair, to start and stop task
attempts. Each attempt runs in a process group and session of its own: a command is
forked and exec'd, a Python task is forked from this single-threaded process and runs
its callable there, with a context rebuilt for it. So every kind of task can be stopped
the same way: SIGTERM to its group, SIGKILL to whatever is left after the grace period.

An attempt is reported ended only when no process of its group is left: after its
main process exits, the rest of the group is stopped too (as systemd stops what a
oneshot unit leaves behind). This process is a child subreaper, so orphans of the task
processes are reparented here and reaped, and whatever is left when the run ends is
killed. It stops every task by itself when

- the runner dies (the socket reaches end of file), whatever killed it;
- the run lock's lease runs out without being renewed (the runner is paused, or cut off
  from Redis): it reads the lock's PTTL itself, and the task processes are dead before
  the lease ends, so the runner that takes over next never runs a task beside them;
- it receives SIGTERM, SIGINT or SIGHUP itself (a service manager stopping everything).

Task processes also get PR_SET_PDEATHSIG, so a task's main process dies with this one
if both this process and the runner are killed at once. Every process of a run carries
TRADEUL_MAINT_RUN_ID in its environment, which lets the next runner on the host stop
what such a double kill left behind (`processes.stop_leftovers`).

The messages are dicts sent with `multiprocessing.connection` (length-framed pickles)
between the runner and its own child: runner -> supervisor `start`, `stop`, `stop_all`,
`bye`; supervisor -> runner `ended`.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from functools import partial
from typing import Any, Callable

from tradeul_maint import taskenv
from tradeul_maint.settings import RunSettings

STOP_GRACE = RunSettings.stop_grace_seconds  # between SIGTERM and SIGKILL of a group, unless the hello says otherwise
OUTPUT_LIMIT = 64 * 1024  # bytes of a task's output kept, from the end
RESULT_LIMIT = 4 * 1024 * 1024  # bytes of a Python task's result message read at most
RUN_ID_VAR = "TRADEUL_MAINT_RUN_ID"
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36

# The lease as the supervisor sees it: PTTL while the lock holds the run's token, -3 when it does not.
LEASE_LEFT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PTTL', KEYS[1]) end
return -3
"""


class TaskStopped(BaseException):
    """Raised in a Python task's process by SIGTERM: not an Exception, so a task's `except Exception` lets it pass."""


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the other safeguards still hold
        return None


_PRCTL = _load_prctl()  # loaded once: a task process forked from here calls it at once


def _prctl(option: int, value: int) -> None:
    if _PRCTL is not None:
        _PRCTL(option, value, 0, 0, 0)


# --- the supervisor process ----------------------------------------------------------------


@dataclass
class Attempt:
    """One task attempt's process group, from fork until no process of it is left."""

    id: str
    task: str
    pid: int  # its main process, leader of its group and session: the group id too
    output_fd: int | None
    result_fd: int | None
    output: bytearray = field(default_factory=bytearray)
    result: bytearray = field(default_factory=bytearray)
    returncode: int | None = None  # once the main process is reaped
    stop_why: str | None = None  # why it was stopped, when it was
    kill_at: float | None = None  # when its group gets SIGKILL (monotonic)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:  # a member changed its credentials: still alive
            return True

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Supervisor:
    def __init__(self, conn: Connection, hello: dict[str, Any], make_client: Callable[[], Any] | None):
        self.conn = conn
        self.hello = hello
        self.make_client = make_client
        self.grace = float(hello.get("grace", STOP_GRACE))
        self.attempts: dict[str, Attempt] = {}
        self.selector = selectors.DefaultSelector()
        self.stopping: str | None = None  # set once everything is being stopped
        self.runner_gone = False
        self.bye = False
        self._lease = LeaseWatch(hello.get("lock"), make_client)
        self._wakeup_r, self._wakeup_w = os.pipe()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.set_blocking(fd, False)
        from loguru import logger

        self.log = logger.bind(run_id=hello.get("run_id"))

    # The loop ---------------------------------------------------------------------------

    def serve(self) -> None:
        signal.set_wakeup_fd(self._wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.selector.register(self.conn.fileno(), selectors.EVENT_READ, "control")
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, "wakeup")
        while not (self.bye or self.runner_gone) or self.attempts:
            timeout = self._next_timer()
            for key, _ in self.selector.select(timeout):
                what = key.data
                if what == "control":
                    self._read_control()
                elif what == "wakeup":
                    _drain(self._wakeup_r)
                else:
                    self._read_pipe(*what)
            self._reap()
            self._watch_lease()
            self._advance()
        self._kill_descendants()

    def _next_timer(self) -> float:
        deadlines = [a.kill_at for a in self.attempts.values() if a.kill_at is not None]
        deadlines.append(self._lease.next_check)
        wait = min(deadlines) - time.monotonic()
        # While a main process is gone and its group lingers, look again soon.
        if any(a.returncode is not None for a in self.attempts.values()):
            wait = min(wait, 0.05)
        return max(0.0, min(wait, 1.0))

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop_all(f"the supervisor received {signal.Signals(signum).name}")

    def _read_control(self) -> None:
        while True:
            try:
                if not self.conn.poll(0):
                    return
                message = self.conn.recv()
            except (EOFError, OSError):
                self._runner_died()
                return
            op = message["op"]
            if op == "start":
                self._start(message)
            elif op == "stop":
                attempt = self.attempts.get(message["id"])
                if attempt is not None:
                    self._stop(attempt, message["why"])
            elif op == "stop_all":
                self._stop_all(message["why"])
            elif op == "bye":
                self.bye = True
                self._stop_all("the run ended")

    def _runner_died(self) -> None:
        if self.runner_gone:
            return  # seen by a failed send, then again by the read of what the runner left unread
        self.selector.unregister(self.conn.fileno())
        self.runner_gone = True
        if self.attempts:
            self.log.bind(tasks=sorted(a.task for a in self.attempts.values()), console=False) \
                .error("runner_died_stopping_tasks")
        self._stop_all("its runner died", grace=min(self.grace, self._lease.safe_grace()))

    def _send(self, message: dict[str, Any]) -> None:
        if self.runner_gone:
            return
        try:
            self.conn.send(message)
        except OSError:
            self._runner_died()

    # Starting ---------------------------------------------------------------------------

    def _start(self, message: dict[str, Any]) -> None:
        refused = self.stopping or self._lease.trouble  # nothing new starts while stopping
        if refused:
            self._send({"op": "ended", "id": message["id"], "returncode": None, "output": "",
                        "result": None, "stopped": refused})
            return
        out_r, out_w = os.pipe()
        res_r, res_w = os.pipe2(os.O_CLOEXEC)
        console = os.dup(2)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(out_r)
            os.close(res_r)
            _child(message, self.hello, self.make_client, out_w, res_w, console, parent=os.getppid(),
                   keep=(self.conn, self.selector))
        for fd in (out_w, res_w, console):
            os.close(fd)
        attempt = Attempt(message["id"], message["task"], pid, out_r, res_r)
        self.attempts[attempt.id] = attempt
        for fd, kind in ((out_r, "output"), (res_r, "result")):
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ, (attempt.id, kind))

    def _read_pipe(self, attempt_id: str, kind: str) -> None:
        attempt = self.attempts.get(attempt_id)
        if attempt is None:
            return
        fd = attempt.output_fd if kind == "output" else attempt.result_fd
        buffer = attempt.output if kind == "output" else attempt.result
        while fd is not None:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._close_pipe(attempt, kind)
                return
            buffer += chunk
            if kind == "output" and len(buffer) > 2 * OUTPUT_LIMIT:
                del buffer[:-OUTPUT_LIMIT]
            elif kind == "result" and len(buffer) > RESULT_LIMIT:
                del buffer[RESULT_LIMIT:]

    def _close_pipe(self, attempt: Attempt, kind: str) -> None:
        fd = attempt.output_fd if kind == "output" else attempt.result_fd
        if fd is None:
            return
        self.selector.unregister(fd)
        os.close(fd)
        if kind == "output":
            attempt.output_fd = None
        else:
            attempt.result_fd = None

    # Stopping ---------------------------------------------------------------------------

    def _stop(self, attempt: Attempt, why: str, grace: float | None = None) -> None:
        """SIGTERM to the group now, SIGKILL after the grace period (sooner if asked, never later)."""
        grace = self.grace if grace is None else grace
        kill_at = time.monotonic() + grace
        if attempt.stop_why is None:
            attempt.stop_why = why
            attempt.signal_group(signal.SIGTERM)
            attempt.signal_group(signal.SIGCONT)  # a stopped (SIGSTOP) process would never see the SIGTERM
        attempt.kill_at = kill_at if attempt.kill_at is None else min(attempt.kill_at, kill_at)

    def _stop_all(self, why: str, grace: float | None = None, final: bool = True) -> None:
        """Stop every attempt; `final`: and start none any more (the run is ending)."""
        if final:
            self.stopping = self.stopping or why
        for attempt in list(self.attempts.values()):
            self._stop(attempt, why, grace)

    def _reap(self) -> None:
        """Collect every child that exited: task main processes, and orphans reparented to this subreaper."""
        leaders = {a.pid: a for a in self.attempts.values()}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in leaders:
                leaders[pid].returncode = os.waitstatus_to_exitcode(status)

    def _watch_lease(self) -> None:
        """While the lease is in doubt nothing runs; a lock taken over by another runner is the end."""
        self._lease.check(self.log)
        if self._lease.trouble is not None:
            self._stop_all(self._lease.trouble, grace=max(0.0, self._lease.deadline - time.monotonic()),
                           final=self._lease.lost)

    def _advance(self) -> None:
        """Escalate overdue stops, stop what a finished main process left behind, report what has ended."""
        now = time.monotonic()
        for attempt in list(self.attempts.values()):
            if attempt.kill_at is not None and now >= attempt.kill_at:
                attempt.signal_group(signal.SIGKILL)
            if attempt.returncode is None:
                continue
            if attempt.group_alive():
                if attempt.kill_at is None:
                    # The main process ended and left processes behind: they end with it.
                    self.log.bind(task=attempt.task, console=False).warning("task_left_processes_stopping_them")
                    attempt.kill_at = now + self.grace
                    attempt.signal_group(signal.SIGTERM)
                    attempt.signal_group(signal.SIGCONT)
                continue
            self._finish(attempt)

    def _finish(self, attempt: Attempt) -> None:
        for kind in ("output", "result"):
            self._read_pipe(attempt.id, kind)  # what is left in the pipes; never waits
            self._close_pipe(attempt, kind)
        del self.attempts[attempt.id]
        result = None
        if attempt.result:
            try:
                result = json.loads(attempt.result)
            except ValueError:
                result = None
        output = bytes(attempt.output[-OUTPUT_LIMIT:]).decode("utf-8", errors="replace")
        self._send({"op": "ended", "id": attempt.id, "returncode": attempt.returncode, "output": output,
                    "result": result, "stopped": attempt.stop_why})

    def _kill_descendants(self) -> None:
        """The run is over: no process it started may stay, not even one that left its task's group."""
        for _ in range(100):
            children = _children(os.getpid())
            if not children:
                return
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)
            self._reap()


class LeaseWatch:
    """Reads the run lock's remaining lease itself, so tasks stop before the lease ends whatever the runner does."""

    def __init__(self, lock: dict[str, Any] | None, make_client: Callable[[], Any] | None):
        self.lock = lock
        self.lease = (lock["lease_ms"] / 1000) if lock else 0.0
        self.next_check = time.monotonic() + (self.lease / 4 if lock else 3600.0)
        self.expires_at = time.monotonic() + self.lease  # at the latest; the runner just took or renewed it
        self._client = make_client() if lock and make_client else None
        self._script = self._client.register_script(LEASE_LEFT) if self._client else None
        self.trouble: str | None = None  # why no task may run now: the lease is in doubt or gone
        self.deadline = 0.0  # by when the tasks must be gone (monotonic)
        self.lost = False  # another runner holds the lock: for good

    def safe_grace(self) -> float:
        """How long stopping may take and still end before the lease can pass to another runner."""
        return max(0.0, self.expires_at - self._margin() - time.monotonic())

    def _margin(self) -> float:
        return min(1.0, self.lease / 10)

    def check(self, log) -> None:
        """Look at the lease when it is time to: `trouble` says why tasks must stop (by `deadline`), or None."""
        if self._script is None or time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + max(0.05, self.lease / 4)
        asked = time.monotonic()
        try:
            left = int(self._script(keys=[self.lock["key"]], args=[self.lock["token"]]))
        except Exception as exc:  # Redis unreachable from here too: trust the last lease seen
            left = None
            error = f"{type(exc).__name__}: {exc}"
        if left == -3:
            self.lost = True
            self._trouble(log, "the run lock was taken over by another runner", asked)
            return
        if left is not None and left >= 0:
            self.expires_at = asked + left / 1000
        # The runner renews every third of the lease: half of it gone means renewals stopped.
        if self.expires_at - time.monotonic() < self.lease / 2:
            why = "the run lock's lease was not renewed in time (the runner is paused or cut off from Redis)"
            self._trouble(log, why + (f"; Redis: {error}" if left is None else ""), self.expires_at - self._margin())
        elif not self.lost:
            self.trouble = None

    def _trouble(self, log, why: str, deadline: float) -> None:
        if self.trouble != why:
            log.bind(reason=why, console=False).error("lease_lost_stopping_tasks")
        self.trouble, self.deadline = why, deadline


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rpartition(b")")[2].split()
        if int(fields[1]) == pid and fields[0] != b"Z":
            found.append(int(entry.name))
    return found


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass


# --- inside a task's process ---------------------------------------------------------------


def _child(message: dict[str, Any], hello: dict[str, Any], make_client: Callable[[], Any] | None, out_w: int,
           res_w: int, console: int, parent: int, keep: tuple) -> None:
    """The forked child: a session and group of its own, then exec the command or run the Python task."""
    code = 70
    try:
        os.setsid()
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the supervisor died between fork and prctl
            os._exit(code)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        for thing in keep:  # the supervisor's socket and selector are not the task's
            try:
                thing.close()
            except OSError:
                pass
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        for fd in (null, out_w):
            os.close(fd)
        taskenv.confine(os.environ, message.get("redis_env", False), hello.get("redis"))
        if message["kind"] == "command":
            _exec_command(message, res_w)
        code = _run_python(message, hello, make_client, res_w, console)
    except BaseException:  # nothing may return into the supervisor's loop
        try:
            os.write(2, traceback.format_exc().encode(errors="replace"))
        except OSError:
            pass
    os._exit(code)


def _exec_command(message: dict[str, Any], res_w: int) -> None:
    argv = message["argv"]
    env = {**os.environ, **message["env"]}
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:  # res_w is close-on-exec: only a failed exec writes to it
        os.write(res_w, json.dumps({"exec_error": exc.errno, "strerror": exc.strerror}).encode())
        os._exit(127)


def _run_python(message: dict[str, Any], hello: dict[str, Any], make_client: Callable[[], Any] | None, res_w: int,
                console: int) -> int:
    """Run the task's callable with a context rebuilt here; the outcome goes to `res_w` as JSON."""
    from tradeul_maint import logs, tasks

    sys.stdin = open(os.devnull)  # noqa: SIM115 - the process ends with the task
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115

    def stopped(signum: int, frame: object) -> None:
        raise TaskStopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stopped)
    settings = hello["settings"]
    logs.after_fork(console=open(console, "w", buffering=1))  # noqa: SIM115
    from loguru import logger

    spec = message["spec"]
    log = logger.bind(date=message["date"], run_id=message["run_id"], task=spec.name)
    ctx = tasks.TaskContext(date=tasks.parse_day(message["date"]), task=spec.name, run_id=message["run_id"],
                            redis=make_client() if make_client else None, logger=log, params=dict(spec.params),
                            key_prefix=settings.redis.key_prefix, namespaces=settings.namespaces)
    try:
        outcome = tasks.run_python(spec, ctx, tuple(settings.python_paths))
    except TaskStopped as exc:
        outcome = tasks.Outcome(False, f"stopped by {exc}", result=dict(ctx.result) or None)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    data = json.dumps(outcome.to_json(), default=str).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(res_w, view):]
    return 0


def task_redis(target: dict[str, Any] | None) -> Callable[[], Any] | None:
    """What makes a client on the maintenance Redis for a Python task or the lease watch, decided once.

    `target` is `{"unix_socket": ...}` or `{"url": ..., "password_file": ..., "cluster": ...}`:
    the password file is read here, once, and the runner said whether the server is a cluster,
    so a task's process makes its client without a round trip.
    """
    if not target:
        return None
    from tradeul_maint.connection import connect, read_password, socket_client

    if target.get("unix_socket"):
        return partial(socket_client, target["unix_socket"])
    password_file = target.get("password_file")
    password = read_password(Path(password_file)) if password_file else None
    return partial(connect, target["url"], password, target.get("cluster"))


def main() -> None:
    # `python -m` put the working directory first on sys.path: tasks import from their config's paths only.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    conn = Connection(int(sys.argv[1]))
    try:
        hello = conn.recv()
    except (EOFError, OSError):
        return
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    # What every Python task needs, imported once here: each task process is a fork of this one.
    from tradeul_maint import builtins, connection, tasks  # noqa: F401
    from tradeul_maint.logs import configure_logging

    configure_logging(hello["settings"], hello.get("verbose", False), hello.get("quiet", False),
                      files=bool(hello.get("log_dir")), directory=Path(hello["log_dir"]) if hello.get("log_dir") else None)
    Supervisor(conn, hello, task_redis(hello.get("redis"))).serve()


if __name__ == "__main__":
    main()
