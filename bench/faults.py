"""Fault-injection trials: the CLI as a black box against real redis-servers, judged by a ledger.

    python bench/faults.py                    # every trial, the issue's default counts (long: run by hand)
    python bench/faults.py --trials 5         # 5 of each
    python bench/faults.py --only crash --only signals-term --trials 20 --seed 7

Each trial starts from fresh state (an empty Redis, new state and log directories), runs the
tool as cron or an operator would (`python -m tradeul_maint ...` subprocesses, time given by
`--now`), injects one fault (concurrent runs, SIGKILL, SIGSTOP past the lease, a Redis that
dies, hangs or refuses writes, a replica that lags, a failover, signals, a full disk) and then checks the invariants the
README promises, from the outside: the ledger the tasks append to (bench/ledger.py), the
process table (/proc), the keys in Redis, the exit codes and stderr. A violation names the
trial, its index, the invariant and the evidence (ledger lines, pids, exit codes, stderr),
so it can be reproduced alone with `--only NAME --index I --seed S` (the trial's random
choices come from `random.Random(f"{seed}:{name}:{index}")`).

One table row per trial kind: trials run, invariant violations, and the worst figure seen.
Exit status 1 when any invariant was violated. tests/test_faults.py runs a subset through
`run_trial`, the same code, in the harness's quick mode.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import ledger  # noqa: E402  (bench/ledger.py, beside this file)
from project import Project  # noqa: E402  (tests/project.py: the tests' own)

from tradeul_maint.redisio.embedded import redis_server_binary  # noqa: E402

DAY = "2026-11-25"  # a Wednesday; window 17:00-17:30 New York with the default settings
TICK = "2026-11-25T17:00"  # the first cron tick of that window
AFTER = "2026-11-25T18:00"  # after the window, market closed
PREFIX = "maintenance"
SIGNAL_EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGHUP: 129}


# --- what a trial reports ----------------------------------------------------------------


@dataclass
class Violation:
    trial: str
    index: int
    invariant: str
    evidence: str

    def __str__(self) -> str:
        return f"[{self.trial} #{self.index}] {self.invariant}: {self.evidence}"


@dataclass
class Outcome:
    """One trial's verdict: the violations found and the figures measured (worst-of kept per row)."""

    trial: str
    index: int
    violations: list[Violation] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None

    def check(self, ok: bool, invariant: str, evidence: str | Callable[[], str] = "") -> bool:
        if not ok:
            text = evidence() if callable(evidence) else evidence
            self.violations.append(Violation(self.trial, self.index, invariant, text))
        return ok

    def figure(self, name: str, value: float) -> None:
        """A measurement; the table shows the worst (largest) over the trials, or the sum for "trials ..." counts."""
        self.figures[name] = value


# --- redis-servers the harness controls ---------------------------------------------------


class RedisServer:
    """A real redis-server in `directory`, on a unix socket there; killed and restarted in place."""

    def __init__(self, directory: Path, persist: bool = False):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.persist = persist
        self.sock = directory / "redis.sock"
        self.url = f"unix://{self.sock}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        persistence = ["--appendonly", "yes", "--appendfsync", "always", "--save", ""] if self.persist else \
            ["--appendonly", "no", "--save", ""]
        self.proc = subprocess.Popen([redis_server_binary(), "--port", "0", "--unixsocket", str(self.sock),
                                      "--dir", str(self.dir), *persistence],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as c:
                    c.ping()
                return self
            except (redis.ConnectionError, redis.BusyLoadingError, OSError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server in {self.dir} did not start")
                time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.sock), socket_timeout=5, decode_responses=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class SilentServer:
    """A TCP server on loopback that accepts connections and never answers (a hung Redis, a black hole)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"redis://127.0.0.1:{self.sock.getsockname()[1]}/0"
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self._conns.append(conn)  # held open, never read, never answered
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        for conn in self._conns:
            conn.close()
        self.sock.close()


class TcpServer:
    """A redis-server (or a Sentinel, `sentinel_conf`) on a loopback port: replication needs TCP."""

    def __init__(self, directory: Path, *args: str, sentinel_conf: str | None = None):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args = args
        self.sentinel_conf = sentinel_conf
        self.proc: subprocess.Popen | None = None

    def start(self, *args: str) -> TcpServer:
        argv = [redis_server_binary()]
        if self.sentinel_conf is not None:
            conf = self.dir / "sentinel.conf"
            conf.write_text(self.sentinel_conf)
            argv += [str(conf), "--sentinel"]
        else:
            argv += ["--save", "", "--appendonly", "no"]
        argv += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), *self.args, *args]
        # In its directory: a Sentinel opens its `logfile` before `--dir` applies (a stray sentinel.log otherwise).
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
        if not wait_until(self._answers, 10):
            raise RuntimeError(f"redis-server on port {self.port} did not start")
        return self

    def _answers(self) -> bool:
        try:
            with self.client() as c:
                return bool(c.ping())
        except (redis.ConnectionError, redis.BusyLoadingError, OSError):
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReplicaSet:
    """A primary and its replica on loopback, with a Sentinel (quorum 1) watching them when `sentinel`.

    The Sentinel calls the primary down after 1 s without an answer and promotes the
    replica; the tool finds the primary through it (`url`), as a redis+sentinel:// URL does,
    and so do the trials' checks (`master`): on a loaded machine a Sentinel may fail over again.
    """

    SERVICE = "maint"

    def __init__(self, base: Path, sentinel: bool):
        self.primary = TcpServer(base / "primary").start()
        self.replica = TcpServer(base / "replica").start("--replicaof", "127.0.0.1", str(self.primary.port))
        self.sentinel: TcpServer | None = None
        if not wait_until(self.replicating, 10):
            raise RuntimeError("the replica did not catch up with the primary")
        if sentinel:
            self.sentinel = TcpServer(base / "sentinel", sentinel_conf=(
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 1\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 2000\nlogfile sentinel.log\n")).start()
            if not wait_until(lambda: self._sentinel("SENTINEL", "REPLICAS", self.SERVICE), 15):
                raise RuntimeError("the Sentinel did not find the replica")

    @property
    def url(self) -> str:
        if self.sentinel is not None:
            return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.SERVICE}"
        return f"redis://127.0.0.1:{self.primary.port}/0"

    def master(self) -> redis.Redis:
        """A client of the primary as the Sentinel names it, found again on each new connection."""
        from redis.sentinel import Sentinel

        sentinel = Sentinel([("127.0.0.1", self.sentinel.port)], socket_timeout=5)
        return sentinel.master_for(self.SERVICE, socket_timeout=5, decode_responses=True)

    def replicating(self) -> bool:
        """The primary sees its replica online, and the replica's link is up."""
        try:
            with self.primary.client() as p, self.replica.client() as r:
                seen = p.info("replication").get("slave0") or {}
                return seen.get("state") == "online" and r.info("replication").get("master_link_status") == "up"
        except (redis.RedisError, OSError):
            return False

    def _sentinel(self, *command: str):
        try:
            with self.sentinel.client() as c:
                return c.execute_command(*command)
        except (redis.RedisError, OSError):
            return None

    def freeze(self) -> None:
        """The replica stops (SIGSTOP): it acknowledges nothing; what the primary sends waits in its socket."""
        self.replica.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.replica.signal(signal.SIGCONT)

    def cut(self) -> None:
        """The replica lags from now on: frozen, and its link closed by the primary, so that no later write
        reaches it (a frozen replica alone would still find them in its socket once it runs again)."""
        self.freeze()
        with self.primary.client() as p:
            p.execute_command("CLIENT", "KILL", "TYPE", "replica")

    def fail_over(self, timeout: float = 30) -> bool:
        """The primary dies (SIGKILL), the replica runs again, the Sentinel promotes it; then the old primary
        comes back empty as its replica (as an operator would bring it back), so writes can be confirmed again."""
        self.primary.signal(signal.SIGKILL)
        self.primary.proc.wait(10)
        self.thaw()
        promoted = wait_until(lambda: self._promoted(), timeout, step=0.1)
        if promoted:
            self.primary.start("--replicaof", "127.0.0.1", str(self.replica.port))
            self.primary, self.replica = self.replica, self.primary
            promoted = wait_until(self.replicating, 15)
        return promoted

    def _promoted(self) -> bool:
        """The Sentinel has ended its failover with the replica as the master (until then, an old primary that
        comes back can make it give up and turn the promoted replica back into a replica of the empty one)."""
        try:
            with self.sentinel.client() as c:
                master = c.sentinel_master(self.SERVICE)
        except (redis.RedisError, OSError):
            return False
        return int(master["port"]) == self.replica.port and "failover_in_progress" not in master["flags"]

    def close(self) -> None:
        for server in (self.sentinel, self.replica, self.primary):
            if server is not None:
                server.stop()


def dead_url() -> str:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


# --- a trial's workspace ------------------------------------------------------------------


@dataclass
class Result:
    args: tuple[str, ...]
    code: int | None
    stdout: str
    stderr: str
    seconds: float
    pid: int = 0

    def __str__(self) -> str:
        err = self.stderr.strip().replace("\n", " | ")[-600:]
        return f"`{' '.join(self.args)}` (pid {self.pid}) exit {self.code} after {self.seconds:.1f}s, stderr: {err!r}"


def _as_cron() -> None:
    """In the child before exec: the signal dispositions cron gives its jobs. A harness started with
    `nohup` or `&` ignores SIGHUP or SIGINT, and ignored signals are inherited across exec."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


class Proc:
    """A CLI subprocess whose output goes to files (twenty of them must not block on full pipes)."""

    def __init__(self, ws: Workspace, args: tuple[str, ...], env: dict[str, str]):
        ws.counter += 1
        self.args = args
        self.out = ws.root / f"out-{ws.counter}.txt"
        self.err = ws.root / f"err-{ws.counter}.txt"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.started = time.monotonic()
            self.popen = subprocess.Popen([sys.executable, "-m", "tradeul_maint", *args], env=env, cwd=ws.root,
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=err, preexec_fn=_as_cron)
        self.pid = self.popen.pid
        self.ended: float | None = None

    def wait(self, timeout: float = 120) -> Result:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.ended = self.ended or time.monotonic()
        return Result(self.args, self.popen.returncode, self.out.read_text(), self.err.read_text(),
                      self.ended - self.started, self.pid)

    def poll(self) -> int | None:
        code = self.popen.poll()
        if code is not None and self.ended is None:
            self.ended = time.monotonic()
        return code


class Workspace(Project):
    """Fresh state for one trial: the tests' Project (config, state with the calendar cache copied in, logs), a ledger.

    Its processes are Procs, which time the trial's commands, rather than the tests' Popen.
    """

    def __init__(self, root: Path, redis_url: str | None, cache: Path):
        super().__init__(root, redis_url)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ledger = root / "ledger.jsonl"
        self.script, _ = ledger.install(root)
        self.counter = 0
        shutil.copytree(cache, self.state_dir / "cache")

    @property
    def marker(self) -> str:
        """A string in the command line of every task process of this trial (and nowhere else)."""
        return str(self.root)

    def spawn(self, *args: str, **env: str) -> Proc:
        return Proc(self, args, self.env(**env))

    def run(self, *args: str, timeout: float = 120, **env: str) -> Result:
        return self.spawn(*args, **env).wait(timeout)

    def configure(self, head: str, tasks: list[dict], jobs: dict[str, tuple[str, list[dict]]] | None = None
                     ) -> None:
        """`tasks` at the top level (the job `maintenance`); `jobs`: name -> (its [jobs.NAME] keys, its tasks)."""
        text = head + "\n" + "\n".join(self.task_toml(t) for t in tasks)
        for name, (keys, job_tasks) in (jobs or {}).items():
            text += f"\n[jobs.{name}]\n{keys}\n" + "\n".join(self.task_toml(t, f"jobs.{name}.tasks") for t in job_tasks)
        self.write_config(text)

    def task_toml(self, t: dict, table: str = "tasks") -> str:
        """One [[tasks]] table: kind "cmd" (ledger_task.py) or "py" (ledger_pytask:task)."""
        lines = [f"[[{table}]]", f'name = "{t["name"]}"']
        if t.get("kind", "cmd") == "cmd":
            argv = [sys.executable, str(self.script), str(self.ledger), t["name"], "{date}", str(t.get("sleep", 0))]
            if t.get("ignore_term"):
                argv.append("--ignore-term")
            if t.get("children"):
                argv += ["--children", str(t["children"])]
            if t.get("faults"):
                argv += ["--faults", str(t["faults"])]
            if t.get("escape"):
                argv += ["--escape", t["escape"]]
            argv += ["--marker", self.marker]
            lines.append("command = " + json.dumps(argv))
        else:
            params = {"ledger": str(self.ledger), "sleep": t.get("sleep", 0), "marker": self.marker}
            params.update(t.get("params", {}))
            lines.append('python = "ledger_pytask:task"')
            lines.append("params = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in params.items()) + " }")
        if t.get("after"):
            lines.append("after = " + json.dumps(t["after"]))
        for key in ("timeout", "retries", "retry_delay"):
            if key in t:
                lines.append(f"{key} = {t[key]}")
        return "\n".join(lines) + "\n"

    def executions(self) -> list[ledger.Execution]:
        return ledger.executions(self.ledger)

    def leftovers(self, pgids: set[int] = frozenset()) -> dict[int, str]:
        """Live processes of this trial's tasks (by command line or by a recorded process group).

        The harness's own process group is never one of them: a `python` task that runs inside a
        runner started by the harness records that group, which the harness's redis-servers share."""
        return ledger.processes(self.marker, set(pgids) - {os.getpgid(0)})


class Harness:
    """Owns the redis-servers and scratch directories of a set of trials, and cleans them up."""

    def __init__(self, base: Path | None = None, quick: bool = False):
        self.quick = quick  # the suite's subset: shorter tasks and leases, fewer processes, same invariants
        self._tmp = None if base else tempfile.TemporaryDirectory(prefix="tradeul-faults-")
        self.base = Path(base or self._tmp.name)
        self.base.mkdir(parents=True, exist_ok=True)
        self.cache = self.base / "calendar-cache"
        from tradeul_maint.config.settings import CalendarOverrides
        from tradeul_maint.plan.calendar import load_calendar

        load_calendar("XNYS", CalendarOverrides(), self.cache)
        self._servers: list[RedisServer] = []
        self._shared: RedisServer | None = None
        self._count = 0
        self._cleanup: list[Callable[[], None]] = []

    def server(self, persist: bool = False) -> RedisServer:
        """A redis-server of the trial's own (killed, restarted, reconfigured by the trial)."""
        self._count += 1
        server = RedisServer(self.base / f"redis-{self._count}", persist).start()
        self._servers.append(server)
        return server

    def replica_set(self, sentinel: bool = False) -> ReplicaSet:
        """A primary, a replica and (`sentinel`) a Sentinel of the trial's own, stopped when the harness closes."""
        self._count += 1
        rs = ReplicaSet(self.base / f"replicas-{self._count}", sentinel)
        self.on_exit(rs.close)
        return rs

    def shared(self) -> RedisServer:
        """One server for the trials that do not harm it, flushed before each trial."""
        if self._shared is None:
            self._shared = self.server()
        with self._shared.client() as c:
            c.flushall()
        return self._shared

    def workspace(self, name: str, index: int, redis_url: str | None) -> Workspace:
        self._count += 1
        return Workspace(self.base / f"{name}-{index}-{self._count}", redis_url, self.cache)

    def on_exit(self, action: Callable[[], None]) -> None:
        self._cleanup.append(action)

    def close(self) -> None:
        for action in reversed(self._cleanup):
            with contextlib.suppress(Exception):
                action()
        for server in self._servers:
            server.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


# --- reading the tool's state from the outside --------------------------------------------


def document(client: redis.Redis, day: str = DAY, prefix: str = PREFIX) -> dict:
    raw = client.get(f"{prefix}:status:{day}")
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def task_states(client: redis.Redis, day: str = DAY) -> dict[str, str]:
    """Each task's state as any reader sees it: the status document's `tasks` map, one GET."""
    states = document(client, day).get("tasks")
    return dict(states) if isinstance(states, dict) else {}


def is_done(client: redis.Redis, day: str = DAY, prefix: str = PREFIX) -> bool:
    doc = document(client, day, prefix)
    return doc.get("all_success") is True and bool(doc.get("completed_at")) and \
        client.get(f"{prefix}:executed:{day}") == "1"


def snapshot(client: redis.Redis) -> dict[str, tuple]:
    """Every key with its type, value and whether it has a TTL (to see that nothing was written)."""
    out = {}
    for key in sorted(client.scan_iter(count=1000)):
        kind = client.type(key)
        value: object
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = tuple(sorted(client.hgetall(key).items()))
        elif kind == "list":
            value = tuple(client.lrange(key, 0, -1))
        elif kind == "set":
            value = tuple(sorted(client.smembers(key)))
        elif kind == "zset":
            value = tuple(client.zrange(key, 0, -1, withscores=True))
        else:
            value = client.dump(key)
        out[key] = (kind, value, client.ttl(key) >= 0)
    return out


def diff(before: dict, after: dict) -> str:
    changed = [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    return "; ".join(f"{k}: {before.get(k, '(absent)')!s:.160} -> {after.get(k, '(absent)')!s:.160}"
                     for k in changed[:6])


def lock_value(client: redis.Redis) -> str | None:
    try:
        return client.get(f"{PREFIX}:lock")
    except redis.ResponseError:
        return "(not a string)"


def traceback_in(text: str) -> bool:
    return "Traceback (most recent call last)" in text


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def started(ws: Workspace, task: str | None = None, count: int = 1) -> Callable[[], bool]:
    return lambda: sum(1 for e in ws.executions() if task is None or e.task == task) >= count


def run_until_done(ws: Workspace, client: redis.Redis, out: Outcome, args: tuple[str, ...], timeout: float = 90
                   ) -> list[Result]:
    """Run `args` again and again (a manual retry loop) until the session is done; exit 75 means the lock
    is still held (a lease to expire) and is retried. Returns every attempt's result."""
    results: list[Result] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = ws.run(*args)
        results.append(result)
        if result.code == 0 and is_done(client):
            break
        if result.code != 75:
            break
        time.sleep(0.3)
    last = results[-1] if results else None
    out.check(last is not None and last.code == 0 and is_done(client), "the next run completes the session",
              lambda: f"after {len(results)} attempt(s) over {timeout:.0f}s: {last}; states {task_states(client)}")
    return results


def standard_tasks(parallel_long: float = 1.5, rng: random.Random | None = None) -> list[dict]:
    """The 6-task cycle with parallel branches used by the crash and Redis trials.

        a ──▶ d ──┐
        b ──┐     ├──▶ f
        c ──┴▶ e ─┘          (c is a `python` task; the others are commands)
    """
    r = rng or random.Random(0)
    jitter = lambda base: round(base * r.uniform(0.7, 1.3), 3)  # noqa: E731
    return [
        {"name": "a", "sleep": jitter(1.0)},
        {"name": "b", "sleep": jitter(0.6)},
        {"name": "c", "kind": "py", "sleep": jitter(0.4)},
        {"name": "d", "sleep": jitter(0.8), "after": ["a"]},
        {"name": "e", "sleep": jitter(parallel_long), "after": ["b", "c"]},
        {"name": "f", "sleep": jitter(0.5), "after": ["d", "e"]},
    ]


def manual_head(lease: float = 60, parallel: int = 1, extra: str = "", redis: str = "") -> str:
    return (f"[schedule]\nauto_recover = false\n[run]\nmax_parallel = {parallel}\n"
            f"[redis]\nlock_lease_seconds = {lease}\n{redis}[calendar]\nexpiry_warning_days = 0\n{extra}")


def check_completed_finished(out: Outcome, ws: Workspace, client: redis.Redis, when: str) -> None:
    """No task recorded completed without an execution that ended in the ledger."""
    ended = {e.task for e in ws.executions() if e.completed and e.session == DAY}
    states = task_states(client)
    wrong = sorted(t for t, s in states.items() if s == "completed" and t not in ended)
    out.check(not wrong, "no task recorded done that did not finish",
              f"{when}: recorded completed {wrong} but the ledger has no end line for them; states {states}")


def check_done_means_completed(out: Outcome, ws: Workspace, client: redis.Redis, names: list[str]) -> None:
    if not is_done(client):
        return
    states = task_states(client)
    ended = {e.task for e in ws.executions() if e.completed and e.session == DAY}
    bad = sorted(n for n in names if states.get(n) != "completed" or n not in ended)
    out.check(not bad, "sessions done with a task not completed",
              f"session done but {bad}: states {states}, ledger ends {sorted(ended)}")


class Watcher:
    """Watches process groups from a background thread: when was each last seen alive (any member)?

    An execution whose process was killed has no end line; its end is the last moment its group
    was seen alive, which is what the overlap with a later execution is judged on.
    """

    def __init__(self, pgids: set[int], interval: float = 0.05):
        self.pgids = set(pgids) - {os.getpgid(0)}
        self.last_seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._look()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _look(self) -> None:
        now = time.time()
        for pid in ledger.processes(None, pgids=self.pgids):
            with contextlib.suppress(OSError):
                self.last_seen[os.getpgid(pid)] = now

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._look()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._look()

    def ended(self, execs: list[ledger.Execution], since: float) -> list[ledger.Execution]:
        """`execs` with each open execution of these groups ended when its group was last seen alive
        (or at `since`, when the watch began, if it was never seen)."""
        out = []
        for e in execs:
            if e.end is None and e.pgid in self.pgids:
                e = dataclasses.replace(e, end=self.last_seen.get(e.pgid, since))
            out.append(e)
        return out


def cleanup_leftovers(ws: Workspace, pgids: set[int] = frozenset()) -> dict[int, str]:
    left = ws.leftovers(pgids)
    ledger.kill_all(left)
    return left


# --- the trials ------------------------------------------------------------------------------


def trial_overlap(h: Harness, out: Outcome, rng: random.Random) -> None:
    """20 cron `run`s started together at a window tick: each task once, the session done, every exit 0."""
    runs = 12 if h.quick else 20
    server = h.shared()
    ws = h.workspace(out.trial, out.index, server.url)
    tasks = [{"name": "a", "sleep": 0.2}, {"name": "b", "kind": "py", "sleep": 0.2},
             {"name": "c", "sleep": 0.1, "after": ["a", "b"]}]
    ws.configure("[schedule]\nauto_recover = false\n[calendar]\nexpiry_warning_days = 0\n", tasks)
    procs = [ws.spawn("run", "--now", TICK) for _ in range(runs)]
    results = [p.wait(120) for p in procs]
    execs = ws.executions()
    with server.client() as c:
        for name in ("a", "b", "c"):
            mine = [e for e in execs if e.task == name]
            out.check(len(mine) <= 1, "duplicate executions",
                      f"task {name} ran {len(mine)} times: " + "; ".join(e.describe() for e in mine))
        out.check(is_done(c), "sessions left not done", lambda: f"{DAY} states {task_states(c)}")
    bad = [r for r in results if r.code != 0]
    out.check(not bad, "exit codes other than 0", "; ".join(map(str, bad[:3])))
    out.figure("max executions of one task", max([sum(e.task == n for e in execs) for n in "abc"], default=0))
    out.figure("slowest run (s)", max(r.seconds for r in results))
    cleanup_leftovers(ws)


def trial_jobs(h: Harness, out: Outcome, rng: random.Random) -> None:
    """Two jobs due at the same tick (the top-level pipeline and [jobs.other], each with a command and a python
    task): 20 cron `run`s (8 in quick mode) started together, one of them SIGKILLed at a random moment, then cron runs until both
    are done. Each job runs under its own lock: a task runs again only when the kill interrupted it, two runs of
    one job never overlap, and both sessions end done."""
    runs = 8 if h.quick else 20
    server = h.shared()
    ws = h.workspace(out.trial, out.index, server.url)
    mine = [{"name": "a", "sleep": 0.4}, {"name": "b", "kind": "py", "sleep": 0.3, "after": ["a"]}]
    other = [{"name": "x", "kind": "py", "sleep": 0.3}, {"name": "y", "sleep": 0.4, "after": ["x"]}]
    ws.configure("[schedule]\nlookback_sessions = 1\n[redis]\nlock_lease_seconds = 2\n"
                    "[calendar]\nexpiry_warning_days = 0\n", mine,
                    {"other": ('window_start = "17:00"\nwindow_minutes = 30', other)})
    procs = [ws.spawn("run", "--now", TICK) for _ in range(runs)]
    victim = rng.randrange(runs)
    time.sleep(rng.uniform(0.2, 2.0))
    killed = procs[victim].poll() is None
    if killed:
        procs[victim].popen.send_signal(signal.SIGKILL)
    results = [p.wait(120) for i, p in enumerate(procs)]
    killed_at = time.time()
    with server.client() as c:  # a lock the killed runner held runs out with its lease (2 s)
        wait_until(lambda: not c.exists(f"{PREFIX}:lock", f"{PREFIX}:other:lock"), timeout=5)
    for _ in range(10):  # cron ticks within the window, until both jobs are done
        last = ws.run("run", "--now", TICK)
        with server.client() as c:
            if is_done(c) and is_done(c, prefix=f"{PREFIX}:other"):
                break
        time.sleep(0.5)
    execs = ws.executions()
    horizon = time.time()
    job_of = {t["name"]: "maintenance" for t in mine} | {t["name"]: "other" for t in other}
    for name in job_of:
        runs_of = [e for e in execs if e.task == name]
        out.check(len(runs_of) <= 1 or (killed and all(e.start <= killed_at for e in runs_of[:-1])),
                  "a task of a job executed again without a kill to explain it",
                  f"task {name} ran {len(runs_of)} times: " + "; ".join(e.describe() for e in runs_of))
    same_job = [(a, b) for a, b in ledger.overlapping(execs, same_task=False, horizon=horizon)
                if job_of[a.task] == job_of[b.task]]
    out.check(not same_job, "two runs of one job overlapping (each job has its own lock)",
              "; ".join(f"{a.describe()} || {b.describe()}" for a, b in same_job[:3]))
    with server.client() as c:
        left = [job for job, prefix in (("maintenance", PREFIX), ("other", f"{PREFIX}:other"))
                if not is_done(c, prefix=prefix)]
        out.check(not left, "jobs left not done", f"{left} after the runs; last {last}")
    bad = [r for i, r in enumerate(results) if i != victim and (r.code != 0 or traceback_in(r.stderr))]
    out.check(not bad, "exit codes other than 0", "; ".join(map(str, bad[:3])))
    both = [(a, b) for a, b in ledger.overlapping(execs, same_task=False, horizon=horizon)
            if job_of[a.task] != job_of[b.task]]
    out.figure("executions of the two jobs side by side", len(both))
    out.figure("trials with the runner killed mid-run", int(killed))
    cleanup_leftovers(ws)


def trial_mixed(h: Harness, out: Outcome, rng: random.Random) -> None:
    """`run` (cron, catching up), `recover` and `run --date D --force` together on the same sessions."""
    server = h.shared()
    ws = h.workspace(out.trial, out.index, server.url)
    tasks = [{"name": "a", "sleep": 0.3}, {"name": "b", "kind": "py", "sleep": 0.2, "after": ["a"]},
             {"name": "c", "sleep": 0.2}]
    ws.configure("[schedule]\nlookback_sessions = 3\n[calendar]\nexpiry_warning_days = 0\n", tasks)
    commands = [("run", "--now", AFTER), ("recover", "--now", AFTER), ("run", "--date", DAY, "--force", "--now", AFTER),
                ("run", "--now", AFTER), ("recover", "--now", AFTER)]
    rng.shuffle(commands)
    procs = [ws.spawn(*args) for args in commands]
    results = [p.wait(120) for p in procs]
    execs = ws.executions()
    horizon = time.time()
    same = ledger.overlapping(execs, same_task=True, horizon=horizon)
    out.check(not same, "overlapping executions of one task",
              "; ".join(f"{a.describe()} || {b.describe()}" for a, b in same[:3]))
    cross = ledger.overlapping(execs, same_task=False, horizon=horizon)
    out.check(not cross, "executions of two runs overlapping",
              "; ".join(f"{a.describe()} || {b.describe()}" for a, b in cross[:3]))
    allowed = {"run": {0}, "recover": {0, 75}}
    bad = [r for r in results if r.code not in ({0, 75} if "--date" in r.args else allowed[r.args[0]])
           or traceback_in(r.stderr)]
    out.check(not bad, "exit codes other than 0 (75 for a manual run that found the lock taken)",
              "; ".join(map(str, bad[:3])))
    # Liveness: one more recover finishes whatever the busy ones left.
    final = ws.run("recover", "--now", AFTER)
    with server.client() as c:
        sessions = ["2026-11-23", "2026-11-24", DAY]
        left = [d for d in sessions if not is_done(c, d)]
        out.check(not left and final.code == 0, "sessions left not done", f"{left} after a final recover: {final}")
    out.figure("runs that found the lock taken (exit 75)", sum(r.code == 75 for r in results))
    cleanup_leftovers(ws)


def trial_crash(h: Harness, out: Outcome, rng: random.Random) -> None:
    """SIGKILL of the runner at a random moment of a 6-task cycle (max_parallel 3), then `run` until done."""
    server = h.shared()
    ws = h.workspace(out.trial, out.index, server.url)
    # e (the long branch) outlasts the lease, so a re-run can start while an orphaned e still runs.
    long = 3.0 if h.quick else 5.0
    tasks = standard_tasks(parallel_long=long, rng=rng)
    ws.configure(manual_head(lease=2, parallel=3), tasks)
    args = ("run", "--date", DAY, "--now", AFTER)
    runner = ws.spawn(*args)
    delay = rng.uniform(0.2, long + 1.5)
    time.sleep(delay)
    if runner.poll() is not None:
        out.figure("runs that ended before the kill", 1)
    runner.popen.send_signal(signal.SIGKILL)
    runner.wait(30)
    killed_at = time.time()
    with server.client() as c:
        at_kill = task_states(c)
        completed_at_kill = {t for t, s in at_kill.items() if s == "completed"}
        first_execs = [e for e in ws.executions() if e.start <= killed_at]
        pgids = {e.pgid for e in first_execs if e.pgid and e.pgid != os.getpgid(0)}
        watch = Watcher(pgids)
        outlived = {pid: cmd for pid, cmd in ws.leftovers(pgids).items()}
        out.figure("task processes alive after the runner died", len(outlived))
        check_completed_finished(out, ws, c, "right after the kill")
        results = run_until_done(ws, c, out, args)
        watch.stop()
        execs = watch.ended(ws.executions(), killed_at)
        again = [e for e in execs if e.start > killed_at and e.task in completed_at_kill]
        out.check(not again, "completed tasks executed again",
                  lambda: f"recorded completed at the kill ({sorted(completed_at_kill)}), started again: "
                          + "; ".join(e.describe() for e in again))
        check_done_means_completed(out, ws, c, [t["name"] for t in tasks])
        check_completed_finished(out, ws, c, "at the end")
        horizon = time.time()
        overlap = [(a, b) for a, b in ledger.overlapping(execs, same_task=True, horizon=horizon)
                   if a.start <= killed_at < b.start]
        out.check(not overlap, "task processes that outlived the runner and overlapped their re-run",
                  lambda: "; ".join(f"{a.describe()} (its group last seen alive then) still running when re-run "
                                    f"{b.describe()}" for a, b in overlap[:3])
                  + f"; killed at {killed_at:.3f}; alive right after the kill: {outlived}")
    out.figure("seconds from kill to done", sum(r.seconds for r in results))
    cleanup_leftovers(ws, pgids)


def trial_pause(h: Harness, out: Outcome, rng: random.Random) -> None:
    """SIGSTOP the lock holder (and its tasks, as a paused VM) past its lease; another runner finishes; SIGCONT:
    its later writes are refused, its tasks are stopped, the final state is the second runner's."""
    lease = 2 if h.quick else 3
    server = h.shared()
    ws = h.workspace(out.trial, out.index, server.url)
    # Every other trial, the task running at the pause ignores SIGTERM: stopping it takes more than asking.
    tasks = [{"name": "a", "sleep": 0.3}, {"name": "b", "sleep": rng.uniform(lease - 0.5, lease + 1), "after": ["a"],
                                           "ignore_term": out.index % 2 == 1},
             {"name": "p", "kind": "py", "sleep": 0.3, "after": ["a"]},
             {"name": "c", "sleep": 0.3, "after": ["b", "p"]}]
    ws.configure(manual_head(lease=lease, parallel=2), tasks)
    args = ("run", "--date", DAY, "--now", AFTER)
    first = ws.spawn(*args)
    if not wait_until(started(ws, "b"), 30):
        out.check(False, "trial setup", f"task b never started: {first.wait(5)}")
        return
    time.sleep(rng.uniform(0, 0.5))
    frozen = [first.pid] + ledger.descendants(first.pid)
    for pid in frozen:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGSTOP)
    time.sleep(lease + 1.0)
    with server.client() as c:
        run_until_done(ws, c, out, args, timeout=60)
        before = snapshot(c)
        second_run = document(c).get("run_id")
        continued_at = time.time()
        for pid in frozen:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)
        result = first.wait(60)
        exited_at = time.time()
        after = snapshot(c)
        out.check(before == after, "later writes of the paused runner refused", lambda: diff(before, after))
        out.check(result.code == 75, "the paused runner exits 75", str(result))
        mine = {e.run for e in ws.executions() if e.start < continued_at - lease}
        late = [e for e in ws.executions() if e.start > continued_at and e.run in mine]
        out.check(not late, "the paused runner starts no task after it lost the lock",
                  "; ".join(e.describe() for e in late))
        left = ledger.processes(None, pids=set(frozen[1:]))
        out.check(not left, "the paused runner's tasks are stopped",
                  f"alive after it exited: {left}")
        doc = document(c)
        final = task_states(c)
        out.check(doc.get("run_id") == second_run and is_done(c) and
                  all(final.get(t["name"]) == "completed" for t in tasks),
                  "the final state is the second runner's",
                  f"run_id {doc.get('run_id')} (second runner {second_run}), states {final}")
    out.figure("seconds for the paused runner to exit after SIGCONT", round(exited_at - continued_at, 2))
    ledger.kill_all(left)
    cleanup_leftovers(ws)


def trial_unreachable(h: Harness, out: Outcome, rng: random.Random) -> None:
    """Redis unreachable at start: exit 75 at once, nothing run; for a cron tick and a manual run."""
    ws = h.workspace(out.trial, out.index, dead_url())
    ws.configure(manual_head(), standard_tasks())
    for args in (("run", "--now", TICK), ("run", "--date", DAY, "--now", AFTER), ("recover", "--now", AFTER)):
        result = ws.run(*args, timeout=60)
        out.check(result.code == 75, "exit 75", str(result))
        out.check(len(result.stderr.strip().splitlines()) == 1 and not traceback_in(result.stderr),
                  "one line on stderr", str(result))
        out.figure("slowest exit (s)", max(out.figures.get("slowest exit (s)", 0), result.seconds))
    out.check(not ws.executions(), "nothing run", "; ".join(e.describe() for e in ws.executions()))


def trial_silent(h: Harness, out: Outcome, rng: random.Random) -> None:
    """A server that accepts connections and never answers: exit 75 within 10 s, nothing run."""
    silent = SilentServer()
    try:
        ws = h.workspace(out.trial, out.index, silent.url)
        ws.configure(manual_head(), standard_tasks())
        commands = [("run", "--now", TICK), ("run", "--date", DAY, "--now", AFTER)]
        for args in commands[out.index % 2:][:1] if h.quick else commands:
            result = ws.run(*args, timeout=60)
            out.check(result.code == 75 and result.seconds <= 10, "exit 75 within 10 s", str(result))
            out.check(len(result.stderr.strip().splitlines()) == 1 and not traceback_in(result.stderr),
                      "one line on stderr", str(result))
            out.figure("slowest exit (s)", max(out.figures.get("slowest exit (s)", 0), result.seconds))
        out.check(not ws.executions(), "nothing run", "; ".join(e.describe() for e in ws.executions()))
    finally:
        silent.close()


def _restart(persist: bool):
    def trial(h: Harness, out: Outcome, rng: random.Random) -> None:
        """Redis killed (SIGKILL) and restarted mid-cycle: nothing recorded done that did not finish; the
        faulted run exits 0 or 75; the next run completes the session."""
        server = h.server(persist=persist)
        ws = h.workspace(out.trial, out.index, server.url)
        tasks = standard_tasks(rng=rng)
        ws.configure(manual_head(lease=3, parallel=3), tasks)
        args = ("run", "--date", DAY, "--now", AFTER)
        runner = ws.spawn(*args)
        time.sleep(rng.uniform(0.3, 3.0))
        server.kill()
        time.sleep(rng.uniform(0.2, 4.0))
        server.start()
        result = runner.wait(90)
        out.check(result.code in (0, 75) and not traceback_in(result.stderr),
                  "the faulted run exits 0 or 75", str(result))
        with server.client() as c:
            check_completed_finished(out, ws, c, "after the faulted run")
            check_done_means_completed(out, ws, c, [t["name"] for t in tasks])
            pgids = {e.pgid for e in ws.executions() if e.pgid}
            left = ws.leftovers(pgids)
            out.check(not left, "no task process outlives its runner", f"alive after exit {result.code}: {left}")
            ledger.kill_all(left)
            results = run_until_done(ws, c, out, args)
            check_done_means_completed(out, ws, c, [t["name"] for t in tasks])
            check_completed_finished(out, ws, c, "at the end")
        out.figure("seconds from the fault to done", result.seconds + sum(r.seconds for r in results))
        cleanup_leftovers(ws)
        server.stop()
    return trial


REFUSALS = {
    # How a real redis-server is made to refuse writes, and how it is set right again.
    "READONLY": ([("REPLICAOF", "127.0.0.1", "1")], [("REPLICAOF", "NO", "ONE")]),
    "NOREPLICAS": ([("CONFIG", "SET", "min-replicas-to-write", "1")],
                   [("CONFIG", "SET", "min-replicas-to-write", "0")]),
    "OOM": ([("CONFIG", "SET", "maxmemory-policy", "noeviction"), ("CONFIG", "SET", "maxmemory", "1")],
            [("CONFIG", "SET", "maxmemory", "0")]),
}


def _refuse(client: redis.Redis, kind: str, on: bool) -> None:
    for command in REFUSALS[kind][0 if on else 1]:
        client.execute_command(*command)


def _refused(at_start: bool):
    def trial(h: Harness, out: Outcome, rng: random.Random) -> None:
        """Redis refusing writes (READONLY, NOREPLICAS, OOM in turn) mid-cycle or at the start: exit 75 with
        one line, nothing recorded done that did not finish, and resumable once Redis accepts writes again."""
        kind = list(REFUSALS)[out.index % len(REFUSALS)]
        server = h.server()
        ws = h.workspace(out.trial, out.index, server.url)
        tasks = standard_tasks(rng=rng)
        ws.configure(manual_head(lease=3, parallel=3), tasks)
        args = ("run", "--date", DAY, "--now", AFTER)
        with server.client() as c:
            if at_start:
                _refuse(c, kind, True)
                result = ws.run(*args)
            else:
                runner = ws.spawn(*args)
                wait_until(started(ws), 20)
                time.sleep(rng.uniform(0, 2.5))
                _refuse(c, kind, True)
                result = runner.wait(90)
            out.check(result.code == 75, f"exit 75 ({kind})", str(result))
            out.check(len(result.stderr.strip().splitlines()) == 1 and not traceback_in(result.stderr),
                      f"one line on stderr ({kind})", str(result))
            if at_start:
                out.check(not ws.executions(), "nothing run", "; ".join(e.describe() for e in ws.executions()))
            pgids = {e.pgid for e in ws.executions() if e.pgid}
            left = ws.leftovers(pgids)
            out.check(not left, "no task process outlives its runner", f"alive after exit {result.code}: {left}")
            ledger.kill_all(left)
            _refuse(c, kind, False)
            check_completed_finished(out, ws, c, f"after {kind}")
            run_until_done(ws, c, out, args)
            check_done_means_completed(out, ws, c, [t["name"] for t in tasks])
        out.figure("seconds to exit after the fault", result.seconds)
        cleanup_leftovers(ws)
        server.stop()
    return trial


def trial_window_down(h: Harness, out: Outcome, rng: random.Random) -> None:
    """Redis down for the whole window (every tick exits 75, nothing run); back up during the next
    day's market hours (nothing run: catch-up waits for the close); the first tick with the market
    closed catches the session up."""
    server = h.shared()
    ws = h.workspace(out.trial, out.index, server.url)
    tasks = [{"name": "a", "sleep": 0.1}, {"name": "b", "kind": "py", "sleep": 0.1, "after": ["a"]}]
    ws.configure("[schedule]\nlookback_sessions = 3\n[calendar]\nexpiry_warning_days = 0\n", tasks)
    down = dead_url()
    for minute in range(0, 35, 5):
        result = ws.run("run", "--now", f"{DAY}T17:{minute:02d}", TRADEUL_MAINT_REDIS_URL=down)
        out.check(result.code == 75, "every tick while Redis is down exits 75", str(result))
    out.check(not ws.executions(), "nothing run while Redis is down", str(ws.executions()))
    open_tick = ws.run("run", "--now", "2026-11-27T10:00")  # Friday (early close 13:00), market open
    out.check(open_tick.code == 0 and not ws.executions(), "no catch-up while the market is open",
              f"{open_tick}; ledger {[e.describe() for e in ws.executions()]}")
    closed_tick = ws.run("run", "--now", "2026-11-27T13:05")  # the first tick after the early close
    with server.client() as c:
        out.check(closed_tick.code == 0 and is_done(c, DAY), "caught up by the first run after Redis returns "
                  "with the market closed", lambda: f"{closed_tick}; states {task_states(c, DAY)}")
    runs = [e for e in ws.executions() if e.session == DAY]
    out.check(sorted(e.task for e in runs) == ["a", "b"], "each task of the missed session run once",
              "; ".join(e.describe() for e in runs))
    out.figure("hours from window end to catch-up", (dt.datetime(2026, 11, 27, 13, 5) -
                                                     dt.datetime(2026, 11, 25, 17, 30)).total_seconds() / 3600)


def worker_lines_after(ws: Workspace, task: str, since: Callable[[dict], bool], before_attempt: int | None = None
                       ) -> list[str]:
    """Lines of workers that `task` left (those of attempts before `before_attempt`, or all), written after
    the first line for which `since` holds (ledger order)."""
    lines = ledger.read(ws.ledger)
    first = next((i for i, e in enumerate(lines) if since(e)), None)
    if first is None:
        return []
    return [f"worker of {e['task']} attempt {e['attempt']} (pid {e['pid']}) after line {first}: {lines[first]}"
            for e in lines[first + 1:] if e["ev"] == "worker" and e["task"] == task
            and (before_attempt is None or e["attempt"] < before_attempt)]


def workers_of(ws: Workspace) -> set[int]:
    return {e["pid"] for e in ledger.read(ws.ledger) if e["ev"] == "worker"}


def trial_escape(h: Harness, out: Outcome, rng: random.Random) -> None:
    """Tasks that leave a worker running out of their process group (setsid, a double fork with setsid, `setsid
    env -i`), one failing its first attempt, with dependents: no worker writes after a later attempt of its task
    or a dependent of it has started, and none outlives the run."""
    server = h.shared()
    ws = h.workspace(out.trial, out.index, server.url)
    hows = ["setsid", "double-fork", "env-i"]
    faults = ws.root / "faults.json"
    faults.write_text(json.dumps({f"{DAY}/a": [1]}))
    tasks = [{"name": "a", "sleep": 0.1, "escape": rng.choice(hows), "faults": faults, "retries": 1,
              "retry_delay": 0.01},
             {"name": "p", "kind": "py", "sleep": 0.1, "params": {"escape": rng.choice(hows)}},
             {"name": "b", "sleep": 0.1, "escape": rng.choice(hows), "after": ["a"]},
             {"name": "c", "sleep": 0.1, "after": ["b", "p"]}]
    containment = "subreaper" if out.index % 2 else "auto"
    ws.configure(manual_head(parallel=2).replace(
        "[run]\n", f'[run]\nstop_grace_seconds = 0.5\ncontainment = "{containment}"\n'), tasks)
    result = ws.run("run", "--date", DAY, "--now", AFTER)
    try:
        with server.client() as c:
            out.check(result.code == 0 and is_done(c), "the cycle completes", str(result))
        def starts(task: str, attempt: int | None = None) -> Callable[[dict], bool]:
            return lambda e: e["ev"] == "start" and e["task"] == task and attempt in (None, e.get("attempt"))

        late = worker_lines_after(ws, "a", starts("a", 2), before_attempt=2)  # the retry
        late += worker_lines_after(ws, "a", starts("b")) + worker_lines_after(ws, "b", starts("c"))  # dependents
        late += worker_lines_after(ws, "p", starts("c"))
        out.check(not late, "a worker writes after its task's retry or a dependent started", "; ".join(late[:3]))
        alive = [pid for pid in workers_of(ws) if ledger.alive(pid)]
        out.check(not alive, "no worker outlives the run", f"alive: {alive}")
        out.figure("workers stopped", len(workers_of(ws)))
    finally:
        cleanup_leftovers(ws)


def trial_parents(h: Harness, out: Outcome, rng: random.Random) -> None:
    """A python task with timeout = 4 that, in turn, stops (SIGSTOP) or kills its reaper or the run's supervisor:
    the run ends within the timeout, the grace period and a margin, leaves no process, and the next run completes
    the session with no two executions of the task at once."""
    server = h.shared()
    ws = h.workspace(out.trial, out.index, server.url)
    act = ["stop-parent", "stop-grandparent", "kill-parent", "kill-grandparent"][out.index % 4]
    grace, timeout, margin = 1, 4, 15
    tasks = [{"name": "a", "kind": "py", "sleep": 30, "timeout": timeout, "params": {"parents": act}},
             {"name": "b", "sleep": rng.uniform(0.1, 2)}]
    head = manual_head(lease=10, parallel=2).replace("[run]\n", f"[run]\nstop_grace_seconds = {grace}\n")
    ws.configure(head, tasks)
    result = ws.run("run", "--date", DAY, "--now", AFTER, timeout=timeout + grace + margin)
    family = [e for e in ledger.read(ws.ledger) if e["ev"] == "family"]
    try:
        out.check(result.code in (1, 75), f"the run ends within timeout + grace + {margin}s, exit 1 or 75",
                  str(result))
        out.figure("seconds to exit", round(result.seconds, 2))
        ours = {f[k] for f in family for k in ("pid", "reaper", "supervisor")}
        wait_until(lambda: not [p for p in ours if ledger.alive(p)] and not ws.leftovers(), 2)
        alive = [p for p in ours if ledger.alive(p)] + list(ws.leftovers())
        out.check(not alive, "no process of the run is left", f"alive: {alive}; {result}")
        gone_at = time.time()  # a stopped execution has no end line: it ended by now at the latest
        ws.configure(head, [{**tasks[0], "params": {}, "sleep": 0.2}, tasks[1]])
        with server.client() as c:
            run_until_done(ws, c, out, ("run", "--date", DAY, "--now", AFTER))
        execs = [dataclasses.replace(e, end=gone_at) if e.end is None and e.start < gone_at else e
                 for e in ws.executions()]
        overlap = ledger.overlapping(execs, same_task=True, horizon=time.time())
        out.check(not overlap, "no two executions of a task at once", "; ".join(
            f"{a.describe()} / {b.describe()}" for a, b in overlap[:2]))
    finally:
        for f in family:
            for pid in (f["reaper"], f["supervisor"], f["pid"]):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)
        cleanup_leftovers(ws, {f["pid"] for f in family})


def trial_double_kill(h: Harness, out: Outcome, rng: random.Random) -> None:
    """The runner, its supervisor and the reapers SIGKILLed at once (`pkill -9 -f tradeul_maint`) while a task
    that left a worker with `env -i` runs; then `run` until done: the worker writes nothing after the task's
    re-run started, and is gone. Every other trial without a cgroup (the run's record alone)."""
    server = h.shared()
    ws = h.workspace(out.trial, out.index, server.url)
    containment = "subreaper" if out.index % 2 else "auto"
    tasks = [{"name": "a", "sleep": 30, "escape": "env-i"},
             {"name": "b", "kind": "py", "sleep": rng.uniform(0.1, 1), "params": {"escape": "setsid"}}]
    head = manual_head(lease=2, parallel=2).replace(
        "[run]\n", f'[run]\nstop_grace_seconds = 0.5\ncontainment = "{containment}"\n')
    ws.configure(head, tasks)
    args = ("run", "--date", DAY, "--now", AFTER)
    runner = ws.spawn(*args)
    try:
        if not wait_until(lambda: any(e["ev"] == "worker" and e["task"] == "a" for e in ledger.read(ws.ledger)), 30):
            out.check(False, "trial setup", f"task a left no worker: {runner.wait(5)}")
            return
        worker = next(e["pid"] for e in ledger.read(ws.ledger) if e["ev"] == "worker" and e["task"] == "a")
        # The record names the worker (without a cgroup, it is added every 0.5 s): what the tool promises.
        records = ws.state_dir / "processes"
        wait_until(lambda: any(str(worker) in p.read_text() or '"cgroup": "/' in p.read_text()
                               for p in records.glob("*")), 5)
        time.sleep(rng.uniform(0, 1))
        ours = [pid for pid in ledger.descendants(runner.pid)
                if b"tradeul_maint" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        ledger.kill_all([runner.pid, *ours])
        runner.wait(30)
        killed_at = time.time()
        out.figure("workers alive after the kill", sum(ledger.alive(p) for p in workers_of(ws)))
        ws.configure(head, [{**tasks[0], "sleep": 0.2}, tasks[1]])  # the re-run need not take long
        with server.client() as c:
            results = run_until_done(ws, c, out, args, timeout=60)
        rerun = [e for e in ws.executions() if e.task == "a" and e.start > killed_at]
        late = worker_lines_after(ws, "a", lambda e: e["ev"] == "start" and e["task"] == "a" and e["t"] > killed_at,
                                  before_attempt=rerun[0].attempt) if rerun else []
        out.check(bool(rerun) and not late, "the worker writes nothing after the task's re-run started",
                  "; ".join(late[:3]) or "no re-run")
        alive = [pid for pid in workers_of(ws) if ledger.alive(pid)]
        out.check(not alive, "no worker outlives the next run", f"alive: {alive}")
        out.figure("seconds from kill to done", round(sum(r.seconds for r in results), 2))
    finally:
        if runner.poll() is None:
            runner.popen.kill()
        cleanup_leftovers(ws)


def _signal_trial(sig: signal.Signals):
    def trial(h: Harness, out: Outcome, rng: random.Random) -> None:
        """A signal at a random moment of a cycle whose tasks spawn grandchildren (every other trial
        ignoring SIGTERM): no process of a task's group survives the runner, the lock is released,
        the exit code is 128 + the signal, the stop is recorded."""
        server = h.shared()
        ws = h.workspace(out.trial, out.index, server.url)
        ignore = out.index % 2 == 1
        tasks = [{"name": "a", "sleep": 0.3},
                 {"name": "b", "sleep": 20, "children": 2, "ignore_term": ignore},
                 {"name": "c", "kind": "py", "sleep": rng.uniform(0.2, 1.5), "after": ["a"]},
                 {"name": "d", "sleep": 0.2, "after": ["b"]}]
        ws.configure(manual_head(lease=10, parallel=2), tasks)
        runner = ws.spawn("run", "--date", DAY, "--now", AFTER)
        early = rng.random() < 0.2
        if early:  # sometimes while the runner is still starting or planning
            time.sleep(rng.uniform(0.05, 0.6))
        else:
            wait_until(started(ws, "b"), 30)
            time.sleep(rng.uniform(0, 1.5))
        signalled = time.time()
        runner.popen.send_signal(sig)
        result = runner.wait(120)
        exited_at = time.time()
        execs = ws.executions()
        pgids = {e.pgid for e in execs if e.pgid and e.pgid != os.getpgid(0)}
        # A moment for the kernel to finish reaping what the runner killed just before it exited.
        wait_until(lambda: not ws.leftovers(pgids), 0.5)
        left = ws.leftovers(pgids)
        began = [e for e in execs if e.start <= signalled]
        expected = SIGNAL_EXIT[sig]
        # Killed by the signal before its handler existed (interpreter start-up) is what a shell reports
        # as 128 + signal too; acceptable only when nothing had started.
        ok_code = result.code == expected or (result.code == -sig and not began)
        out.check(ok_code, f"exit {expected}", lambda: f"{result}; tasks started before the signal: "
                  + "; ".join(e.describe() for e in began))
        out.check(not left, "no process of a task's group survives the runner",
                  lambda: f"{len(left)} alive after exit {result.code}: " + "; ".join(
                      f"pid {p}: {c[-90:]}" for p, c in list(left.items())[:4]) + f" (ignore TERM: {ignore})")
        with server.client() as c:
            out.check(lock_value(c) is None, "the lock is released", f"lock still {lock_value(c)} after {result}")
            doc = document(c)
            if began:
                interrupted = doc.get("interrupted") == sig.name
                states = task_states(c)
                out.check(interrupted and "in_progress" not in states.values() and states.get("b") != "completed",
                          "the stop is recorded (interrupted, no task left in progress)",
                          f"interrupted = {doc.get('interrupted')!r}, states {states}")
        out.figure("seconds from signal to exit", round(exited_at - signalled, 2))
        out.figure("processes left", len(left))
        ledger.kill_all(left)
        cleanup_leftovers(ws, pgids)
    return trial


def trial_log_rotation(h: Harness, out: Outcome, rng: random.Random, writers: int = 6, lines: int = 250) -> None:
    """6 runs at once (each on its own key prefix) writing to one log directory with a 1 KB rotation:
    no entry lost, none torn."""
    server = h.shared()
    ws = h.workspace(out.trial, out.index, server.url)
    procs = []
    for w in range(writers):
        config = ws.root / f"writer{w}.toml"
        tasks = [{"name": "logger", "kind": "py", "params": {"log_lines": lines, "writer": f"w{w}"}},
                 {"name": "after", "sleep": 0, "after": ["logger"]}]
        config.write_text(f"[redis]\nkey_prefix = \"w{w}\"\n[logging]\nrotation = \"1 KB\"\nretention = 100000\n"
                          "[calendar]\nexpiry_warning_days = 0\n" + "".join(ws.task_toml(t) for t in tasks))
        procs.append(ws.spawn("run", "--date", DAY, "--now", AFTER, TRADEUL_MAINT_CONFIG=str(config)))
    results = [p.wait(120) for p in procs]
    bad = [r for r in results if r.code != 0]
    out.check(not bad, "every writer exits 0", "; ".join(map(str, bad[:3])))
    seen: dict[tuple[str, int], int] = {}
    torn = []
    files = [p for p in ws.log_dir.iterdir() if p.name.startswith("maintenance.log")]
    for path in files:
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            torn.append(f"{path.name} does not end with a newline: ...{data[-80:]!r}")
        for line in data.decode(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                torn.append(f"{path.name}: {line[:120]!r}")
                continue
            if entry.get("event") == "ledger_log_line":
                key = (entry["writer"], entry["seq"])
                seen[key] = seen.get(key, 0) + 1
    missing = [(f"w{w}", i) for w in range(writers) for i in range(lines) if (f"w{w}", i) not in seen]
    dup = [k for k, n in seen.items() if n > 1]
    out.check(not torn, "lines torn", "; ".join(torn[:3]))
    out.check(not missing and not dup, "lines lost", f"{len(missing)} missing (e.g. {missing[:3]}), "
              f"{len(dup)} duplicated (e.g. {dup[:3]})")
    out.figure("log files after rotation", len(files))
    out.figure("entries checked", len(seen))


def trial_log_full(h: Harness, out: Outcome, rng: random.Random) -> None:
    """The log directory on a full filesystem (a small tmpfs): no torn line, at most one warning line on
    stderr per run, the runs complete with their state intact."""
    server = h.shared()
    ws = h.workspace(out.trial, out.index, server.url)
    ws.log_dir.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k,mode=0755", "tmpfs", str(ws.log_dir)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        out.skipped = f"cannot mount a tmpfs: {mounted.stderr.strip() or mounted.returncode}"
        return
    h.on_exit(lambda: subprocess.run(["umount", "-l", str(ws.log_dir)], capture_output=True))
    try:
        filler = ws.log_dir / "filler"
        free = shutil.disk_usage(ws.log_dir).free
        filler.write_bytes(b"x" * max(0, free - rng.randint(2, 12) * 1024))
        tasks = [{"name": "logger", "kind": "py", "params": {"log_lines": 200, "writer": "w"}},
                 {"name": "tail", "sleep": 0, "after": ["logger"]}]
        ws.configure("[logging]\nrotation = \"16 KB\"\nretention = 3\n[calendar]\nexpiry_warning_days = 0\n",
                        tasks)
        days = ["2026-11-23", "2026-11-24", DAY]
        results = []
        for day in days:
            results.append(ws.run("run", "--date", day, "--now", AFTER))
            if day == days[1]:
                filler.unlink()  # space again: a line cut short before would now be glued to the next
        with server.client() as c:
            for day, result in zip(days, results):
                out.check(result.code == 0 and is_done(c, day), "the run completes with its state intact",
                          str(result))
                warnings = [l for l in result.stderr.splitlines() if l.strip()]
                out.check(len(warnings) <= 1 and not traceback_in(result.stderr),
                          "at most one warning line on stderr per run",
                          f"{len(warnings)} lines, e.g. {warnings[:3]} ({result.args})")
        torn = []
        for path in ws.log_dir.iterdir():
            if not path.name.startswith("maintenance"):
                continue
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                torn.append(f"{path.name} ends mid-line: ...{data[-60:]!r}")
            for line in data.decode(errors="replace").splitlines():
                try:
                    json.loads(line)
                except ValueError:
                    torn.append(f"{path.name}: {line[:100]!r}...{line[-60:]!r}")
        out.check(not torn, "lines torn", "; ".join(torn[:3]))
        out.figure("stderr lines of the worst run", max(len(r.stderr.splitlines()) for r in results))
    finally:
        subprocess.run(["umount", "-l", str(ws.log_dir)], capture_output=True)


def trial_replica_frozen(h: Harness, out: Outcome, rng: random.Random) -> None:
    """The replica frozen (SIGSTOP) with min_replicas = 1: the run stops before its first task, exit 75 with one
    line naming the replicas it had and needed, the lock given back; thawed, the next run completes."""
    rs = h.replica_set()
    ws = h.workspace(out.trial, out.index, rs.url)
    tasks = [{"name": "a", "sleep": 0.2}, {"name": "b", "kind": "py", "sleep": 0.2, "after": ["a"]}]
    ws.configure(manual_head(redis="min_replicas = 1\nreplica_timeout_seconds = 0.3\n"), tasks)
    rs.freeze()
    args = ("run", "--date", DAY, "--now", AFTER)
    result = ws.run(*args)
    out.check(result.code == 75, "exit 75", str(result))
    line = result.stderr.strip()
    out.check(len(line.splitlines()) == 1 and "only 0 of the 1 replica" in line and f":{rs.replica.port} " in line,
              "one line naming the replicas it had and needed", str(result))
    out.check(not ws.executions(), "nothing run", "; ".join(e.describe() for e in ws.executions()))
    with rs.primary.client() as c:
        out.check(lock_value(c) is None, "the lock is given back", f"lock {lock_value(c)} after {result}")
        rs.thaw()
        wait_until(rs.replicating, 10)
        run_until_done(ws, c, out, args)
    out.figure("seconds to exit 75", round(result.seconds, 2))


LOST_COMPLETION = "completed tasks run again after the failover"


def _failover(min_replicas: int):
    def trial(h: Harness, out: Outcome, rng: random.Random) -> None:
        """A failover right after a task completed: the replica stops receiving (frozen, its link cut) at a
        random moment around the end of task a (most often just before its completion is written), then
        the primary dies with the runner and the Sentinel promotes the replica. A completion the runner
        acted on (b, which needs a, started) must not be lost: a must not run again."""
        rs = h.replica_set(sentinel=True)
        ws = h.workspace(out.trial, out.index, rs.url)
        a_sleep = 0.6 if h.quick else 1.0
        tasks = [{"name": "a", "sleep": a_sleep}, {"name": "b", "sleep": 0.5 if h.quick else 1.5, "after": ["a"]}]
        ws.configure(manual_head(lease=2, redis=f"min_replicas = {min_replicas}\n"
                                                   "replica_timeout_seconds = 0.3\n"), tasks)
        args = ("run", "--date", DAY, "--now", AFTER)
        first = ws.spawn(*args)
        if not wait_until(started(ws, "a"), 30):
            out.check(False, "trial setup", f"task a never started: {first.wait(5)}")
            return
        time.sleep(rng.uniform(a_sleep - 0.4, a_sleep + 0.6))
        rs.cut()
        wait_until(lambda: first.poll() is not None or started(ws, "b")(), 10)
        acted = started(ws, "b")()  # the runner went on: as far as it knew, a's completion was recorded
        with rs.primary.client() as c:
            on_primary = task_states(c)
        first.popen.kill()  # the runner goes down with the primary: nothing rewrites the state on the new one
        result = first.wait(30)
        promoted = rs.fail_over()
        if not out.check(promoted, "trial setup: the Sentinel promoted the replica", "not within 30 s"):
            return
        with rs.master() as c:
            on_promoted = task_states(c)
            run_until_done(ws, c, out, args, timeout=60)
        a_runs = [e for e in ws.executions() if e.task == "a"]
        lost = acted and len(a_runs) > 1
        out.check(not lost, LOST_COMPLETION,
                  lambda: f"b started after a completed, and a ran again: "
                          + "; ".join(e.describe() for e in a_runs)
                          + f"; states on the old primary {on_primary}, on the promoted replica {on_promoted}")
        if min_replicas and not acted and result.code is not None and result.code >= 0:
            out.check(result.code == 75 and "replica" in result.stderr,
                      "a write in doubt ends the run with 75, naming the replicas", str(result))
        out.figure("trials where b started (a's completion confirmed)", int(acted))
        out.figure("trials where a ran again", int(len(a_runs) > 1))
        cleanup_leftovers(ws)
    return trial


@dataclass(frozen=True)
class TrialKind:
    name: str
    run: Callable[[Harness, Outcome, random.Random], None]
    default_trials: int
    title: str
    # What happens without a protection: this invariant's violations are the trial's figure, not a failure.
    shows_loss: str | None = None


TRIALS = [
    TrialKind("overlap", trial_overlap, 50, "Overlap: 20 cron runs at a window tick"),
    TrialKind("mixed", trial_mixed, 20, "Mixed overlap: run, recover, run --date --force"),
    TrialKind("jobs", trial_jobs, 20, "Two jobs due at one tick: 20 cron runs, one SIGKILLed"),
    TrialKind("crash", trial_crash, 50, "Crash: SIGKILL of the runner mid-cycle, then run until done"),
    TrialKind("pause", trial_pause, 20, "Pause past the lease: SIGSTOP, another runner, SIGCONT"),
    TrialKind("redis-unreachable", trial_unreachable, 10, "Redis unreachable at start"),
    TrialKind("redis-silent", trial_silent, 10, "Redis that accepts and never answers"),
    TrialKind("redis-restart", _restart(False), 20, "Redis killed and restarted mid-cycle, no persistence"),
    TrialKind("redis-restart-aof", _restart(True), 20, "Redis killed and restarted mid-cycle, AOF"),
    TrialKind("redis-refuses-start", _refused(True), 9, "READONLY / NOREPLICAS / OOM at the start"),
    TrialKind("redis-refuses-mid", _refused(False), 21, "READONLY / NOREPLICAS / OOM mid-cycle"),
    TrialKind("redis-down-window", trial_window_down, 5, "Redis down for a whole window"),
    TrialKind("signals-term", _signal_trial(signal.SIGTERM), 30, "SIGTERM at a random moment"),
    TrialKind("signals-int", _signal_trial(signal.SIGINT), 30, "SIGINT at a random moment"),
    TrialKind("signals-hup", _signal_trial(signal.SIGHUP), 30, "SIGHUP at a random moment"),
    TrialKind("escape", trial_escape, 10, "Workers that leave their task's group (setsid, double fork, env -i)"),
    TrialKind("parents", trial_parents, 12, "A task that stops or kills its reaper or supervisor (timeout 4 s)"),
    TrialKind("double-kill", trial_double_kill, 10, "Runner, supervisor and reapers SIGKILLed; a worker with env -i"),
    TrialKind("logs-rotation", trial_log_rotation, 10, "Logs: 6 writers, 1 KB rotation"),
    TrialKind("logs-full", trial_log_full, 10, "Logs: full log filesystem (tmpfs)"),
    TrialKind("replica-frozen", trial_replica_frozen, 10, "Replica frozen (SIGSTOP), min_replicas = 1"),
    TrialKind("failover", _failover(1), 20, "Failover right after a task completed, min_replicas = 1"),
    TrialKind("failover-unconfirmed", _failover(0), 20, "The same failover, min_replicas = 0 (shows the loss)",
              shows_loss=LOST_COMPLETION),
]
BY_NAME = {t.name: t for t in TRIALS}


def run_trial(h: Harness, name: str, index: int, seed: int = 0) -> Outcome:
    """One trial of kind `name`; its random choices are reproducible from (seed, name, index)."""
    kind = BY_NAME[name]
    out = Outcome(name, index)
    rng = random.Random(f"{seed}:{name}:{index}")
    try:
        kind.run(h, out, rng)
    except Exception as exc:  # a trial that could not even be judged is a violation, with its cause
        import traceback

        out.check(False, "trial completed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-700:]}")
    return out


@dataclass
class Row:
    kind: TrialKind
    outcomes: list[Outcome]

    @property
    def violations(self) -> list[Violation]:
        return [v for o in self.outcomes for v in o.violations]

    @property
    def failures(self) -> list[Violation]:
        """The violations, but those of the loss a `shows_loss` kind is there to show."""
        return [v for v in self.violations if v.invariant != self.kind.shows_loss]

    def worst(self) -> str:
        figures: dict[str, float] = {}
        for o in self.outcomes:
            for k, v in o.figures.items():
                figures[k] = figures.get(k, 0) + v if k.startswith("trials ") else max(figures.get(k, v), v)
        return "; ".join(f"{k} {v:g}" if isinstance(v, int) or float(v).is_integer() else f"{k} {v:.2f}"
                         for k, v in figures.items())

    def render(self) -> str:
        skipped = [o.skipped for o in self.outcomes if o.skipped]
        if skipped and len(skipped) == len(self.outcomes):
            return f"| {self.kind.title} | 0 | skipped: {skipped[0]} | |"
        counts: dict[str, int] = {}
        for v in self.violations:
            counts[v.invariant] = counts.get(v.invariant, 0) + 1
        broken = ", ".join(f"{k}: {n}" for k, n in counts.items()) or "0"
        return f"| {self.kind.title} | {len(self.outcomes) - len(skipped)} | {broken} | {self.worst()} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, help="trials of each kind (default: each kind's own count)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"only this kind, or kinds starting with it (repeatable): {', '.join(BY_NAME)}")
    parser.add_argument("--index", type=int, action="append", default=[], metavar="I",
                        help="only trial number I of each kind (repeatable): reproduces a violation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--details", type=int, default=3, help="violations shown per kind (default 3)")
    parser.add_argument("--keep", type=Path, help="keep the trials' directories here")
    args = parser.parse_args(argv)
    kinds = [k for k in TRIALS if not args.only or any(k.name.startswith(o) for o in args.only)]
    if not kinds:
        parser.error(f"no trial named {args.only}: {', '.join(BY_NAME)}")
    h = Harness(args.keep)
    rows: list[Row] = []
    timings: list[str] = []
    try:
        for kind in kinds:
            n = args.trials or kind.default_trials
            began = time.monotonic()
            outcomes = []
            for i in args.index or range(n):
                outcomes.append(run_trial(h, kind.name, i, args.seed))
                print(f"  {kind.name} #{i}: {len(outcomes[-1].violations)} violation(s)", file=sys.stderr, flush=True)
            rows.append(Row(kind, outcomes))
            timings.append(f"{kind.name} {time.monotonic() - began:.0f}s")
    finally:
        h.close()
    print("| trial | trials run | invariant violations | worst figure seen |")
    print("|---|---|---|---|")
    for row in rows:
        print(row.render())
    print(f"\ntime: {', '.join(timings)}")
    bad = [row for row in rows if row.failures]
    for row in bad:
        print(f"\n{row.kind.name}: {len(row.failures)} violation(s); first {min(args.details, len(row.failures))}:")
        for v in row.failures[:args.details]:
            print(f"  {v}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
