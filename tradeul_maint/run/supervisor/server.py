"""The supervisor's loop: the runner's requests, one reaper per attempt, the lease, and what strays.

Forked from the runner (`serve`), in a session of its own, with the run's settings in
memory. It answers the runner (run/messages.py) and forks one reaper per attempt
(reaper.py), which reports once no process of its attempt is left; the supervisor then
sends `Ended`. It stops attempts on the runner's request, and every attempt by itself when

- the runner dies (the socket reaches end of file), whatever killed it;
- the run lock's lease is in doubt or lost (lease_watch.py): the task processes are dead
  before the lease can pass to another runner;
- it receives SIGTERM, SIGINT or SIGHUP itself (a service manager stopping everything).

It keeps an eye on what a task may do to its parents: a reaper that a task stopped
(SIGSTOP) is continued; one that does not finish stopping its attempt in time is killed
with the attempt's processes, and what that orphans comes to this process (a child
subreaper too) and is stopped before the attempt is reported ended. Without a cgroup, it
adds the attempts' processes to the run's record every RECORD_SECONDS (run/containment.py).

Why one class of some 350 lines (and a module past 400): `Supervisor` is one event loop
over one selector, and every handler in it acts on the same state (the attempts, the
reapers, the runner's socket, the lease) within one turn of the loop; split into classes,
that state would be handed between objects on every event. Its sections are marked: the
runner's requests, attempts and their reapers, stopping, the lease and what strays.
"""

from __future__ import annotations

import gc
import os
import selectors
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

from tradeul_maint.base import proc
from tradeul_maint.base.proc import Stopping
from tradeul_maint.run.containment import RECORD_SECONDS, cgroup_pids, remove_cgroup
from tradeul_maint.run.messages import AttemptId, Bye, Ended, LeaseHeld, Ping, Pong, Start, Stop, StopAll
from tradeul_maint.run.supervisor.attempt import Shared, become_subreaper
from tradeul_maint.run.supervisor.lease_watch import LeaseWatch
from tradeul_maint.run.supervisor.pipe import Prepare, Report, StopAttempt, take_message, write_message
from tradeul_maint.run.supervisor.reaper import reaper

REAPER_MARGIN = 2.0  # seconds a reaper has past its attempt's SIGKILL before this process kills it and them
LOOK_SECONDS = 1.0  # how often reapers are looked at (continued when a task stopped them)


@dataclass
class Reaper:
    """A reaper as the supervisor sees it: its pipes, and the attempt it runs (None: idle, ready for the next)."""

    pid: int
    assign_fd: int  # supervisor -> reaper: Start, StopAttempt
    report_fd: int | None  # reaper -> supervisor: a Report per attempt
    inbox: bytearray = field(default_factory=bytearray)
    attempt: AttemptId | None = None
    prepared: bool = True  # its next main process is forked (or being forked) and waits for a start

    def tell(self, message: Any) -> None:
        try:
            write_message(self.assign_fd, message)
        except OSError:  # it died: the end of its report pipe says so
            pass
        proc.signal_all([self.pid], signal.SIGCONT)  # a task may have stopped it


@dataclass
class Attempt:
    """An attempt from its start until its reaper's report (or, if the reaper was killed, until its strays are gone)."""

    id: AttemptId
    reaper: Reaper
    stop_why: str | None = None
    kill_at: float | None = None  # when the reaper is told to SIGKILL what is left (monotonic)
    killed: bool = False  # told
    takeover_at: float | None = None  # when this process kills the reaper and the attempt itself
    orphaned: bool = False  # the reaper died without a report: its processes came here
    noted: set[int] = field(default_factory=set)  # pids already in the run's record


class Supervisor:
    def __init__(self, conn: Connection, shared: Shared):
        self.conn = conn
        self.shared = shared
        self.grace = shared.grace
        self.attempts: dict[AttemptId, Attempt] = {}
        self.reapers: dict[int, Reaper] = {}  # alive, or not yet reaped
        self.idle: list[Reaper] = []  # ready for an attempt, the longest idle first
        self.selector = selectors.DefaultSelector()
        self.stopping: str | None = None  # set once everything is being stopped
        self.strays: Stopping | None = None
        self.runner_gone = False
        self.bye = False
        self.lease = LeaseWatch()
        self.next_look = time.monotonic() + LOOK_SECONDS
        self.next_record = time.monotonic() + RECORD_SECONDS
        self._wakeup_r, self._wakeup_w = os.pipe()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.set_blocking(fd, False)
        from loguru import logger

        self.log = logger.bind(run_id=shared.run_id)

    # The loop ---------------------------------------------------------------------------

    def serve(self) -> None:
        signal.set_wakeup_fd(self._wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.selector.register(self.conn.fileno(), selectors.EVENT_READ, "control")
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, "wakeup")
        while not (self.bye or self.runner_gone) or self.attempts:
            for key, _ in self.selector.select(self._next_timer()):
                if key.data == "control":
                    self._read_control()
                elif key.data == "wakeup":
                    _drain(self._wakeup_r)
                else:
                    self._read_reports(key.data)
            self._reap()
            self._watch_lease()
            self._advance()
        self._end()

    def _next_timer(self) -> float:
        deadlines = [self.lease.next_check, self.next_look]
        for a in self.attempts.values():
            deadlines += [t for t in (a.kill_at if not a.killed else None, a.takeover_at) if t is not None]
        if self.strays is not None or any(a.orphaned for a in self.attempts.values()):
            deadlines.append(time.monotonic() + 0.05)
        if self.shared.watch_identities and self.attempts:
            deadlines.append(self.next_record)
        return max(0.0, min(min(deadlines) - time.monotonic(), 1.0))

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop_all(f"the supervisor received {signal.Signals(signum).name}")

    # --- the runner's requests -------------------------------------------------------------

    def _read_control(self) -> None:
        while True:
            try:
                if not self.conn.poll(0):
                    return
                message = self.conn.recv()
            except (EOFError, OSError):
                self._runner_died()
                return
            if isinstance(message, Start):
                self._start(message)
            elif isinstance(message, Stop):
                if (attempt := self.attempts.get(message.attempt)) is not None:
                    self._stop(attempt, message.why)
            elif isinstance(message, StopAll):
                self._stop_all(message.why)
            elif isinstance(message, Ping):
                self._send(Pong(message.seq))
            elif isinstance(message, LeaseHeld):
                self.lease.watch(message, self.shared.make_client)
                self._get_one_ready()  # for the first start
            elif isinstance(message, Bye):
                self.bye = True
                self._stop_all("the run ended")

    def _runner_died(self) -> None:
        if self.runner_gone:
            return  # seen by a failed send, then again by the read of what the runner left unread
        self.selector.unregister(self.conn.fileno())
        self.runner_gone = True
        if self.attempts:
            self.log.bind(tasks=sorted(a.id.task for a in self.attempts.values()), console=False) \
                .error("runner_died_stopping_tasks")
        self._stop_all("its runner died", grace=self.lease.safe_grace(self.grace))

    def _send(self, message: Any) -> None:
        if self.runner_gone:
            return
        try:
            self.conn.send(message)
        except OSError:
            self._runner_died()

    # Starting ---------------------------------------------------------------------------

    # --- attempts and their reapers ----------------------------------------------------------

    def _start(self, message: Start) -> None:
        refused = self.stopping or self.lease.trouble  # nothing new starts while stopping
        if refused:
            self._send(Ended(message.attempt, stopped=refused))
            return
        reaper = next((r for r in self.idle if r.prepared), None) or (self.idle[0] if self.idle else None)
        if reaper is None:
            reaper = self._fork_reaper()
        else:
            self.idle.remove(reaper)
        reaper.attempt, reaper.prepared = message.attempt, True
        self.attempts[message.attempt] = Attempt(message.attempt, reaper)
        reaper.tell(message)
        self._get_one_ready()

    def _get_one_ready(self) -> None:
        """One reaper ready for the next start. Asked for now, as an attempt starts (and when the lock is taken),
        not as one ends: the runner is then between two tasks, and a fork would compete with it for a core."""
        if self.stopping or any(r.prepared for r in self.idle):
            return
        unprepared = next((r for r in self.idle if not r.prepared), None)
        if unprepared is None:
            self.idle.append(self._fork_reaper())
        else:
            unprepared.prepared = True
            unprepared.tell(Prepare())

    def _fork_reaper(self) -> Reaper:
        """A reaper, which gets ready for its first attempt at once (see attempt.reaper)."""
        assign_r, assign_w = os.pipe()
        report_r, report_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        me = os.getpid()
        pid = os.fork()
        if pid == 0:  # the reaper: never returns
            reaper(self.shared, assign_r, report_w, me,
                   inherited=(self.conn, self.selector, assign_w, report_r, self._wakeup_r, self._wakeup_w,
                              *(fd for r in self.reapers.values() for fd in (r.assign_fd, r.report_fd) if fd is not None and fd >= 0)))
        os.close(assign_r)
        os.close(report_w)
        os.set_blocking(report_r, False)
        handle = self.reapers[pid] = Reaper(pid, assign_w, report_r)
        self.selector.register(report_r, selectors.EVENT_READ, handle)
        if self.shared.watch_identities and self.shared.record is not None:
            self.shared.record.note([i for i in [proc.identity(pid)] if i], reaper=True)
        return handle

    def _read_reports(self, reaper: Reaper) -> None:
        """A reaper's reports, each as soon as it is whole; the end of its pipe: it died (or was let go)."""
        if reaper.report_fd is None:
            return
        ended = False
        while True:
            try:
                chunk = os.read(reaper.report_fd, 1 << 20)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                ended = True
                break
            reaper.inbox += chunk
        while reaper.report_fd is not None:
            whole, report, reaper.inbox = take_message(reaper.inbox)
            if not whole:
                break
            attempt = self.attempts.get(reaper.attempt) if reaper.attempt else None
            reaper.attempt = None
            if attempt is not None and isinstance(report, Report):
                self._ended(attempt, report)
            if self.stopping:
                self._let_go(reaper)
                return
            reaper.prepared = False  # it waits to be told (see _get_one_ready)
            self.idle.append(reaper)
        if ended:
            self._let_go(reaper)
            attempt = self.attempts.get(reaper.attempt) if reaper.attempt else None
            if attempt is not None:  # killed with its attempt running: its processes came here
                attempt.orphaned = True
                self.log.bind(task=attempt.id.task, console=False).error("attempt_reaper_killed")

    def _ended(self, attempt: Attempt, report: Report) -> None:
        if report.left_running:
            self.log.bind(task=attempt.id.task, date=attempt.id.session.isoformat(), processes=report.left_running,
                          console=False).warning("task_left_processes_stopping_them")
        self._end_attempt(attempt, Ended(attempt.id, report.returncode, report.output, report.result,
                                         attempt.stop_why))

    def _end_attempt(self, attempt: Attempt, ended: Ended) -> None:
        del self.attempts[attempt.id]
        self._send(ended)

    def _let_go(self, reaper: Reaper) -> None:
        """No more attempts for this reaper: its pipes close, and an idle one then exits."""
        if reaper in self.idle:
            self.idle.remove(reaper)
        if reaper.assign_fd >= 0:
            os.close(reaper.assign_fd)
            reaper.assign_fd = -1
        if reaper.report_fd is not None:
            self.selector.unregister(reaper.report_fd)
            os.close(reaper.report_fd)
            reaper.report_fd = None

    # Stopping ---------------------------------------------------------------------------

    # --- stopping ----------------------------------------------------------------------------

    def _stop(self, attempt: Attempt, why: str, grace: float | None = None) -> None:
        """The reaper stops its attempt now (SIGTERM to its processes), SIGKILLs what is left after the grace
        period, or sooner when told to."""
        grace = self.grace if grace is None else grace
        kill_at = time.monotonic() + grace
        if attempt.stop_why is None:
            attempt.stop_why = why
            attempt.reaper.tell(StopAttempt(attempt.id))
        attempt.kill_at = kill_at if attempt.kill_at is None else min(attempt.kill_at, kill_at)
        attempt.takeover_at = attempt.kill_at + REAPER_MARGIN

    def _stop_all(self, why: str, grace: float | None = None, final: bool = True) -> None:
        """Stop every attempt; `final`: and start none any more (the run is ending)."""
        if final:
            self.stopping = self.stopping or why
            for reaper in list(self.idle):  # no attempt will start: a runner that takes over need not wait for them
                self._let_go(reaper)
        for attempt in list(self.attempts.values()):
            self._stop(attempt, why, grace)

    def _reap(self) -> None:
        """Collect every child that exited: reapers, and strays reparented here."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            reaper = self.reapers.pop(pid, None)
            if reaper is not None:
                self._read_reports(reaper)  # its last report and the end of its pipe: no need to wait for select
                self._forget_cgroups()

    def _forget_cgroups(self) -> None:
        """The cgroups of reapers that are gone."""
        run_cgroup = self.shared.run_cgroup
        if run_cgroup is not None:
            for child in run_cgroup.glob("reaper-*"):
                if int(child.name.split("-")[1]) not in self.reapers:
                    remove_cgroup(child)

    def _cgroups_of(self, reaper: Reaper) -> list[Path]:
        """The reaper's cgroup (see attempt.Reaper._join_cgroup), which holds its attempt's processes."""
        run_cgroup = self.shared.run_cgroup
        return list(run_cgroup.glob(f"reaper-{reaper.pid}")) if run_cgroup is not None else []

    # --- the lease, and what strays ----------------------------------------------------------

    def _watch_lease(self) -> None:
        """While the lease is in doubt nothing runs; a lock taken over by another runner is the end."""
        self.lease.check(self.log)
        if self.lease.trouble is not None:
            self._stop_all(self.lease.trouble, grace=max(0.0, self.lease.deadline - time.monotonic()),
                           final=self.lease.lost)

    def _advance(self) -> None:
        """Escalate overdue stops, continue stopped reapers, take over from stuck ones, stop strays."""
        now = time.monotonic()
        for attempt in list(self.attempts.values()):
            if attempt.orphaned:
                continue
            if attempt.kill_at is not None and now >= attempt.kill_at and not attempt.killed:
                attempt.killed = True
                attempt.reaper.tell(StopAttempt(attempt.id, kill_now=True))
            if attempt.takeover_at is not None and now >= attempt.takeover_at:
                # The reaper did not finish (stopped again and again, or stuck): kill it and its attempt.
                attempt.takeover_at = now + 0.5
                pid = attempt.reaper.pid
                proc.signal_all([s.pid for s in proc.descendants(pid)] +
                                [p for c in self._cgroups_of(attempt.reaper) for p in cgroup_pids(c)], signal.SIGKILL)
                proc.signal_all([pid], signal.SIGKILL)
        if now >= self.next_look:
            self.next_look = now + LOOK_SECONDS
            for reaper in self.reapers.values():
                found = proc.stat(reaper.pid)
                if found is not None and found.state == "T":
                    self.log.bind(task=reaper.attempt.task if reaper.attempt else None, console=False) \
                        .warning("attempt_reaper_stopped_continuing_it")
                    proc.signal_all([reaper.pid], signal.SIGCONT)
        if self.shared.watch_identities and self.attempts and now >= self.next_record:
            self.next_record = now + RECORD_SECONDS
            self._note_processes()
        self._stop_strays()

    def _note_processes(self) -> None:
        """Without a cgroup, the run's record is what a later runner finds them by after a double kill."""
        if self.shared.record is None:
            return
        table = proc.table()
        for attempt in self.attempts.values():
            new = [s.identity for s in proc.descendants(attempt.reaper.pid, table) if s.pid not in attempt.noted]
            attempt.noted.update(i.pid for i in new)
            self.shared.record.note(new)

    def _strays(self) -> list[int]:
        """Children of this process that are no reaper: what a killed reaper's attempt left (and theirs)."""
        me = os.getpid()
        table = proc.table()
        tops = [s.pid for s in table.values() if s.ppid == me and s.pid not in self.reapers and s.alive]
        found = set(tops)
        for pid in tops:
            found.update(s.pid for s in proc.descendants(pid, table))
        for attempt in self.attempts.values():
            if attempt.orphaned:
                found.update(p for c in self._cgroups_of(attempt.reaper) for p in cgroup_pids(c))
        return sorted(found)

    def _stop_strays(self) -> None:
        orphaned = [a for a in self.attempts.values() if a.orphaned]
        if not orphaned and self.strays is None:
            return
        strays = self._strays()
        if not strays:
            self.strays = None
            for attempt in orphaned:  # which attempt a stray was of cannot be told: all of them ended now
                self._end_attempt(attempt, Ended(attempt.id, stopped=attempt.stop_why or
                                                 "its reaper process was killed (the task's processes were stopped)"))
            self._forget_cgroups()
            return
        if self.strays is None:
            self.strays = Stopping.begin("its reaper was killed", self.lease.safe_grace(self.grace), strays)
        self.strays.advance(strays)

    def _end(self) -> None:
        """The run is over: every reaper is let go and waited for; no process of the run may stay."""
        for reaper in list(self.reapers.values()):
            self._let_go(reaper)
        deadline = time.monotonic() + REAPER_MARGIN
        while self.reapers and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.005)
        for _ in range(100):
            left = self._strays() + sorted(self.reapers)
            if not left:
                break
            proc.signal_all(left, signal.SIGKILL)
            time.sleep(0.01)
            self._reap()
        self._forget_cgroups()


def _task_client(shared: Shared) -> Any:
    """One client for every Python task, made here once and never used here: each task's process, a fork,
    gets its own copy, whose pool starts afresh (redis-py checks the pid), without paying for its making."""
    if shared.make_client is None:
        return None
    try:
        return shared.make_client()
    except Exception:  # each task's process tries again and fails with the reason
        return None


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass


def serve(conn: Connection, shared: Shared, runner_end: Any, logging: Any) -> NoReturn:
    """In the process just forked from the runner: become the supervisor, serve, exit (never returns)."""
    code = 0
    try:
        runner_end.close()  # the runner's end: its death must reach this process as the end of the socket
        os.setsid()  # a terminal's SIGINT or SIGHUP reaches the runner only, which stops the tasks through here
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        become_subreaper()
        from tradeul_maint.config import logs

        logs.configure_logging(shared.settings, logging.verbose, logging.quiet, files=logging.directory is not None,
                               directory=logging.directory)
        from tradeul_maint.base import envvars

        os.environ[envvars.RUN_ID] = shared.run_id  # whatever a task starts carries it
        if shared.record is not None:
            shared.record.hold()
        shared = replace(shared, task_client=_task_client(shared))
        gc.freeze()  # the objects so far are shared with every forked reaper and task, untouched
        Supervisor(conn, shared).serve()
    except BaseException:
        import traceback

        code = 70
        try:
            os.write(2, traceback.format_exc().encode(errors="replace"))
        except OSError:
            pass
    os._exit(code)
