"""What runs in an attempt's processes, forked from the supervisor: a reaper, and the task's main process.

A reaper is forked from the supervisor and made a child subreaper (PR_SET_CHILD_SUBREAPER),
so that every process an attempt starts and leaves orphaned, whatever its session or group
(`setsid`, a double fork), is reparented to it rather than to init. It serves one attempt
after another, never two at once: an attempt is over only once the reaper has no child left,
and only then does it report (`Report`) and take the next. Between two attempts it gets
ready for the next one: it forks the task's main process, which waits in a session and group of its own for its
`Start` and then execs the command (no shell) or calls the Python task's callable. So a
start forks nothing; each attempt costs one process, as it would without the reaper.

While an attempt runs, the reaper keeps the tail of its output, and:

- when the main process exits, whatever it left running is stopped (SIGTERM and SIGCONT,
  the grace period, SIGKILL), as systemd's KillMode=control-group does for a unit;
- `StopAttempt` from the supervisor stops the attempt the same way (`kill_now`: SIGKILL
  what is left at once, when a lease ends sooner than the grace period);
- when the supervisor dies, the kernel sends the reaper `SUPERVISOR_GONE` (SIGUSR2, its
  PR_SET_PDEATHSIG), and it stops the attempt the same way before it exits.

The main process dies with its reaper (PR_SET_PDEATHSIG, which a set-user-ID program
clears); what a killed reaper leaves is the supervisor's (its orphans come to it) or,
after a double kill, found by the run's record (containment.py).
"""

from __future__ import annotations

import ctypes
import json
import os
import pickle
import selectors
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn

from tradeul_maint import proc, taskenv
from tradeul_maint.containment import RunRecord, cgroup_pids, join_cgroup, make_cgroup
from tradeul_maint.exchange import AttemptId, CommandRequest, PythonRequest, Start
from tradeul_maint.proc import Stopping
from tradeul_maint.settings import Settings
from tradeul_maint.tasks import task_environment

OUTPUT_LIMIT = 64 * 1024  # bytes of a task's output kept, from the end
RESULT_LIMIT = 4 * 1024 * 1024  # bytes of a Python task's outcome read at most
SUPERVISOR_GONE = signal.SIGUSR2  # the reaper's PR_SET_PDEATHSIG
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Signals a task's process starts with at their default, whatever this process did with them.
DEFAULT_SIGNALS = (*STOP_SIGNALS, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGUSR1, SUPERVISOR_GONE)
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the other safeguards still hold
        return None


_PRCTL = _load_prctl()  # loaded once: a process forked from here calls it at once


def prctl(option: int, value: int) -> None:
    if _PRCTL is not None:
        _PRCTL(option, value, 0, 0, 0)


def become_subreaper() -> None:
    prctl(_PR_SET_CHILD_SUBREAPER, 1)


class TaskStopped(BaseException):
    """Raised in a Python task's process by SIGTERM: not an Exception, so a task's `except Exception` lets it pass."""


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


@dataclass(frozen=True)
class Shared:
    """What every attempt of a run shares, in the supervisor's memory when it forks a reaper."""

    run_id: str
    settings: Settings
    grace: float
    record: RunRecord | None  # the run's record of its processes (containment.py)
    task_client: Any  # a Redis client for Python tasks, made once in the supervisor and never used there
    make_client: Callable[[], Any] | None  # what made it (again in the task's process if that failed)
    redis: dict[str, Any] | None  # where the run's Redis is, for a `redis_env` task (taskenv.py)
    run_cgroup: Path | None  # the run's cgroup: each reaper, and so each attempt in turn, gets one below it
    watch_identities: bool  # no cgroup: the reaper notes its main processes in the record


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


# --- the reaper ----------------------------------------------------------------------------


def reaper(shared: Shared, assign_r: int, report_w: int, supervisor: int, inherited: tuple) -> NoReturn:
    """The forked reaper: attempts one after another until its pipe from the supervisor ends; never returns."""
    code = 70
    try:
        prctl(_PR_SET_PDEATHSIG, SUPERVISOR_GONE)
        if os.getppid() != supervisor:  # the supervisor died between fork and prctl
            os._exit(0)
        become_subreaper()
        for thing in inherited:  # the supervisor's socket, selector and pipes are not the attempts'
            try:
                thing.close() if hasattr(thing, "close") else os.close(thing)
            except OSError:
                pass
        Reaper(shared, assign_r, report_w, supervisor).serve()
        code = 0
    except BrokenPipeError:  # the supervisor is gone: what its attempt left was stopped
        code = 0
    except BaseException:  # nothing may return into the supervisor's loop
        try:
            os.write(2, traceback.format_exc().encode(errors="replace"))
        except OSError:
            pass
    os._exit(code)


class Reaper:
    def __init__(self, shared: Shared, assign_r: int, report_w: int, supervisor: int):
        self.shared, self.assign_r, self.report_w, self.supervisor = shared, assign_r, report_w, supervisor
        self.inbox = bytearray()  # what the supervisor wrote, not yet a whole message
        self.pending: list[Any] = []  # its messages, not yet acted on
        self.orphaned = False  # the supervisor died: stop what runs, then exit
        self.cgroup: Path | None = None
        self.selector = selectors.DefaultSelector()
        self.wakeup_r, self.wakeup_w = os.pipe()
        for fd in (self.wakeup_r, self.wakeup_w, assign_r):
            os.set_blocking(fd, False)

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wakeup_w)
        for sig in (signal.SIGCHLD, SUPERVISOR_GONE):
            signal.signal(sig, _noted)
        for sig in (*STOP_SIGNALS, signal.SIGUSR1):  # stops come as messages; a signal from a task is no order
            signal.signal(sig, signal.SIG_IGN)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ)
        self.selector.register(self.assign_r, selectors.EVENT_READ)
        self._join_cgroup()
        prepare = True  # a reaper gets ready at once when forked; later, when told to (or given an attempt)
        while not self.orphaned:
            if not prepare and not self._wait_for_turn():
                break
            prepare = False
            attempt = AttemptRun(self)
            start = self._wait_for_start(attempt)
            if start is None:  # the run is over (or the supervisor died): the waiting main process goes too
                attempt.abandon()
                break
            attempt.begin(start)
            report = attempt.run()
            write_message(self.report_w, report)

    def _join_cgroup(self) -> None:
        """This reaper's cgroup, when the run has one: each of its attempts in turn has it to itself, since the
        next starts only once no process of the last is left (so a start never waits for a move, about 1 ms,
        during which the kernel holds back every fork on the host)."""
        if self.shared.run_cgroup is not None:
            self.cgroup = make_cgroup(self.shared.run_cgroup / f"reaper-{os.getpid()}")
            if self.cgroup is not None and not join_cgroup(self.cgroup):
                self.cgroup = None

    def _wait_for_turn(self) -> bool:
        """Until told to prepare (or given an attempt, kept for `_wait_for_start`); False: the run is over."""
        while True:
            self.read_messages()
            while self.pending:
                if isinstance(self.pending[0], Start):
                    return True
                if isinstance(self.pending.pop(0), Prepare):
                    return True
            if self.orphaned or self.assign_r is None:
                return False
            for key, _ in self.selector.select(1.0):
                if key.fd == self.wakeup_r:
                    self.notice_signals()

    def _wait_for_start(self, attempt: AttemptRun) -> Start | None:
        while True:
            self.read_messages()
            while self.pending:
                message = self.pending.pop(0)
                if isinstance(message, Start):
                    return message  # (a stop of an attempt before it is stale)
            if self.orphaned or self.assign_r is None:
                return None
            attempt.wait(1.0)

    def read_messages(self) -> None:
        """What the supervisor sent since the last look, onto `pending`; at the end of its pipe, that is all."""
        if self.assign_r is None:
            return
        while True:
            try:
                chunk = os.read(self.assign_r, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.selector.unregister(self.assign_r)
                os.close(self.assign_r)
                self.assign_r = None
                break
            self.inbox += chunk
        while True:
            whole, message, self.inbox = take_message(self.inbox)
            if not whole:
                return
            self.pending.append(message)

    def notice_signals(self) -> None:
        """SIGCHLD wakes the loop (its reaping follows); SUPERVISOR_GONE means stopping and exiting."""
        if SUPERVISOR_GONE in _drain(self.wakeup_r) or os.getppid() != self.supervisor:
            self.orphaned = True


class AttemptRun:
    """One attempt in its reaper: from its main process, forked ahead, to the moment no process of it is left."""

    def __init__(self, reaper: Reaper):
        self.reaper, self.shared = reaper, reaper.shared
        self.id: AttemptId | None = None
        self.returncode: int | None = None
        self.children = True  # until waitpid says there are none
        self.stopping: Stopping | None = None
        self.left_running = 0
        self.buffers: dict[int, bytearray] = {}  # pipe -> what was read from it
        self.open_fds: set[int] = set()
        self.output_fd = self.result_fd = -1
        self.main: int | None = self._fork_main()
        if self.main is not None and self.shared.watch_identities and self.shared.record is not None:
            self.shared.record.note([i for i in [proc.identity(self.main)] if i])

    def _fork_main(self) -> int:
        out_r, out_w = os.pipe()
        res_r, res_w = os.pipe()  # close-on-exec: a command's exec closes it, a failed exec writes why
        self.start_r, self.start_w = os.pipe()
        console = os.dup(2)
        sys.stdout.flush()
        sys.stderr.flush()
        me = os.getpid()
        r = self.reaper
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                for fd in (out_r, res_r, self.start_w, r.wakeup_r, r.wakeup_w, r.report_w, r.assign_r):
                    if fd is not None:
                        os.close(fd)
                r.selector.close()
                if self.shared.record is not None:
                    self.shared.record.close()  # its flock says whether the run's reapers live, not its tasks
                code = main_process(self.start_r, self.shared, me, out_w, res_w, console)
            except BaseException:
                try:
                    os.write(2, traceback.format_exc().encode(errors="replace"))
                except OSError:
                    pass
            os._exit(code)
        for fd in (out_w, res_w, console, self.start_r):
            os.close(fd)
        self._watch(out_r, output=True)
        self._watch(res_r, output=False)
        return pid

    def begin(self, start: Start) -> None:
        self.id = start.attempt
        write_message(self.start_w, start)
        os.close(self.start_w)

    def abandon(self) -> None:
        """No attempt came: the main process that waited for it is killed and collected, its pipes closed."""
        os.close(self.start_w)
        proc.signal_all([self.main], signal.SIGKILL)
        try:
            os.waitpid(self.main, 0)
        except ChildProcessError:
            pass
        for fd in list(self.open_fds):
            self.reaper.selector.unregister(fd)
            os.close(fd)

    def run(self) -> Report:
        while True:
            self._reap()
            if self.main is None and not self.children:
                break
            self.wait(1.0)
        for fd in list(self.open_fds):
            self._read(fd)  # what the pipe holds: never waits for its end (a writer may be stuck in the kernel)
            if fd in self.open_fds:
                self.reaper.selector.unregister(fd)
                os.close(fd)
        return Report(self.returncode, bytes(self.buffers.get(self.output_fd, b"")[-OUTPUT_LIMIT:]).decode(
            "utf-8", errors="replace"), self._outcome(), self.left_running)

    def wait(self, longest: float) -> None:
        """Until something happens (output, a message, a signal) or `longest` seconds; then act on it."""
        timeout = longest  # a lost SIGUSR2 (a parent that died before prctl took effect) is still seen
        if self.stopping is not None:
            timeout = 0.02 if self.stopping.due else min(timeout, self.stopping.kill_at - time.monotonic())
        r = self.reaper
        for key, _ in r.selector.select(max(0.0, timeout)):
            if key.fd == r.wakeup_r:
                r.notice_signals()
            elif key.fd in self.open_fds:
                self._read(key.fd)
        r.read_messages()
        while r.pending and self.id is not None:  # (no Start comes while an attempt runs)
            message = r.pending.pop(0)
            if isinstance(message, StopAttempt) and message.attempt == self.id:
                self._stop()
                if message.kill_now:
                    self.stopping.hurry(0)
        if r.orphaned or os.getppid() != r.supervisor:
            r.orphaned = True
            self._stop()
        if self.stopping is not None and self.stopping.due:
            self.stopping.advance(self.members())

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children = False
                return
            if pid == 0:
                break
            if pid == self.main:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.main = None
        if self.main is None and self.stopping is None:
            # The main process ended and left processes behind: they end with it (the supervisor logs it).
            self.left_running = len(self.members())
            self._stop()

    def _stop(self) -> None:
        if self.stopping is None:
            self.stopping = Stopping.begin("stopped", self.shared.grace, self.members())

    def members(self) -> list[int]:
        """Every process of the attempt: below the reaper in the process tree, or in the attempt's cgroup."""
        me = os.getpid()
        found = {s.pid for s in proc.descendants(me)} | set(cgroup_pids(self.reaper.cgroup))
        found.discard(me)
        return sorted(found)

    def _watch(self, fd: int, output: bool) -> None:
        os.set_blocking(fd, False)
        self.buffers[fd] = bytearray()
        self.open_fds.add(fd)
        if output:
            self.output_fd = fd
        else:
            self.result_fd = fd
        self.reaper.selector.register(fd, selectors.EVENT_READ)

    def _read(self, fd: int) -> None:
        """What the pipe holds now; at its end it is closed (its buffer stays for the report)."""
        buffer = self.buffers[fd]
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.reaper.selector.unregister(fd)
                os.close(fd)
                self.open_fds.discard(fd)
                return
            buffer += chunk
            if fd == self.output_fd and len(buffer) > 2 * OUTPUT_LIMIT:
                del buffer[:-OUTPUT_LIMIT]
            elif fd == self.result_fd and len(buffer) > RESULT_LIMIT:
                del buffer[RESULT_LIMIT:]

    def _outcome(self) -> Any:
        raw = self.buffers.get(self.result_fd)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None


def _noted(signum: int, frame: object) -> None:
    """The wakeup fd says which signal came; the handler itself has nothing to do."""


def _drain(fd: int) -> set[int]:
    received = set()
    try:
        while data := os.read(fd, 4096):
            received.update(data)
    except (BlockingIOError, OSError):
        pass
    return received


# --- a Python task's main process -----------------------------------------------------------


def main_process(assign_r: int, shared: Shared, reaper_pid: int, out_w: int, res_w: int, console: int) -> int:
    """The task's main process: ready in a session of its own, then its attempt, as a command or a Python task."""
    os.setsid()
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != reaper_pid:  # the reaper died between fork and prctl
        return 70
    signal.set_wakeup_fd(-1)
    for sig in DEFAULT_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    for fd in (null, out_w):
        os.close(fd)
    start = read_message(assign_r)
    os.close(assign_r)
    if not isinstance(start, Start):  # the run ended before this spare got an attempt
        return 0
    request = start.request
    env = task_environment(request.env)
    taskenv.confine(env, request.redis_env, shared.redis)
    if isinstance(request, CommandRequest):
        try:
            os.execvpe(request.argv[0], list(request.argv), env)
        except OSError as exc:  # res_w is close-on-exec: only a failed exec writes to it
            os.write(res_w, json.dumps({"exec_error": exc.errno, "strerror": exc.strerror}).encode())
            return 127
    _set_environment(env)
    return python_task(request, shared, res_w, console)


def python_task(request: PythonRequest, shared: Shared, res_w: int, console: int) -> int:
    """Call the task's callable with a context made for it; the outcome goes to `res_w` as JSON."""
    from tradeul_maint import logs, tasks

    sys.stdin = open(os.devnull)  # noqa: SIM115 - the process ends with the task
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115

    def stopped(signum: int, frame: object) -> None:
        raise TaskStopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stopped)
    logs.after_fork(console=open(console, "w", buffering=1))  # noqa: SIM115
    from loguru import logger

    spec, day = request.spec, request.session.isoformat()
    settings = shared.settings
    redis = shared.task_client
    if redis is None and shared.make_client is not None:
        redis = shared.make_client()
    ctx = tasks.TaskContext(date=request.session, task=spec.name, run_id=request.run_id, redis=redis,
                            logger=logger.bind(date=day, run_id=request.run_id, task=spec.name, job=settings.job),
                            params=dict(spec.params), key_prefix=settings.redis.key_prefix,
                            namespaces=settings.namespaces)
    try:
        outcome = tasks.run_python(spec, ctx, tuple(settings.python_paths))
    except TaskStopped as exc:
        outcome = tasks.Outcome(False, f"stopped by {exc}", result=dict(ctx.result) or None)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    data = memoryview(json.dumps(outcome.to_json(), default=str).encode())
    while data:
        data = data[os.write(res_w, data):]
    return 0


def _set_environment(env: dict[str, str]) -> None:
    """os.environ becomes `env` (what the task's own subprocesses inherit), changing only what differs."""
    for name in [n for n in os.environ if n not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
