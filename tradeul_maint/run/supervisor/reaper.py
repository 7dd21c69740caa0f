"""An attempt's reaper: forked from the supervisor, a child subreaper that serves one attempt after another.

Every process an attempt starts and leaves orphaned, whatever its session or group, is reparented to
the reaper, and the attempt is over only once the reaper has no child left: then it reports and
takes the next. See attempt.py for the whole process model of an attempt.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

from tradeul_maint.base import proc
from tradeul_maint.base.proc import Stopping
from tradeul_maint.run.containment import cgroup_pids, join_cgroup, make_cgroup
from tradeul_maint.run.messages import AttemptId, Start
from tradeul_maint.run.supervisor.attempt import (PR_SET_PDEATHSIG, STOP_SIGNALS, SUPERVISOR_GONE, Shared,
                                                  become_subreaper, main_process, prctl)
from tradeul_maint.run.supervisor.pipe import Prepare, Report, StopAttempt, take_message, write_message


OUTPUT_LIMIT = 64 * 1024  # bytes of a task's output kept, from the end
RESULT_LIMIT = 4 * 1024 * 1024  # bytes of a Python task's outcome read at most


def reaper(shared: Shared, assign_r: int, report_w: int, supervisor: int, inherited: tuple) -> NoReturn:
    """The forked reaper: attempts one after another until its pipe from the supervisor ends; never returns."""
    code = 70
    try:
        prctl(PR_SET_PDEATHSIG, SUPERVISOR_GONE)
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
