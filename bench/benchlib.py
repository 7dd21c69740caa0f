"""What the tick, cycle and scale benchmarks share: a private redis-server, seeded sessions, timed processes.

Not a benchmark itself. Each benchmark starts its own redis-server (the binary the
embedded Redis uses) in a temporary directory, on a unix socket or a loopback TCP port,
and stops it when done. Processes are timed wall-clock, start to exit, and their peak
RSS comes from GNU time (`/usr/bin/time`, Debian package `time`) when it is installed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import redis

from tradeul_maint.redisio.embedded import redis_server_binary

REPO = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "tradeul-maint"  # what cron calls
GNU_TIME = shutil.which("time", path="/usr/bin:/bin")  # for peak RSS; None: not reported


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(directory: Path, tcp: bool = False, latency_ms: float = 0.0) -> Iterator[str]:
    """A redis-server without persistence in `directory`; yields its URL and stops it on exit.

    `latency_ms`: reached through bench/latency_proxy.py, that much later each way (TCP), as a
    Redis on another host is.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if latency_ms:
        with redis_server(directory, tcp=True) as direct:
            port = free_port()
            proxy = subprocess.Popen([sys.executable, str(Path(__file__).with_name("latency_proxy.py")), str(port),
                                      direct.rsplit(":", 1)[1].split("/")[0], str(latency_ms)])
            try:
                url = f"redis://127.0.0.1:{port}/0"
                client, deadline = redis.Redis.from_url(url), time.monotonic() + 10
                while True:
                    try:
                        client.ping()
                        break
                    except redis.ConnectionError:
                        if time.monotonic() > deadline:
                            raise SystemExit("the latency proxy did not start") from None
                        time.sleep(0.05)
                client.close()
                yield url
            finally:
                proxy.terminate()
                proxy.wait(10)
        return
    if tcp:
        port = free_port()
        where = ["--port", str(port), "--bind", "127.0.0.1"]
        url = f"redis://127.0.0.1:{port}/0"
    else:
        sock = directory / "redis.sock"
        where = ["--port", "0", "--unixsocket", str(sock)]
        url = f"unix://{sock}"
    proc = subprocess.Popen([redis_server_binary(), *where, "--save", "", "--appendonly", "no",
                             "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("redis-server did not start")
                time.sleep(0.02)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def done_document(session: dt.date, tasks: list[str]) -> str:
    """A finished, successful status document as a cycle of this tool writes it."""
    start = dt.datetime.combine(session, dt.time(22, 0), dt.timezone.utc)
    end = start + dt.timedelta(minutes=3)
    return json.dumps({
        "date": session.isoformat(), "started_at": start.isoformat(), "completed_at": end.isoformat(),
        "duration_seconds": 180.0, "all_success": True, "tasks": {t: "completed" for t in tasks},
        "task_details": {t: {"started_at": start.isoformat(), "finished_at": end.isoformat(),
                             "duration_seconds": 30.0, "attempts": 1, "result": {"rows": 12345}} for t in tasks},
        "attempts": 1, "run_id": "bench", "runner": "bench:1", "interrupted": None})


def seed_done(url: str, sessions: list[dt.date], tasks: list[str], prefix: str = "maintenance") -> None:
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for session in sessions:
        pipe.set(f"{prefix}:status:{session.isoformat()}", done_document(session, tasks), ex=4000 * 86400)
    pipe.execute()
    client.close()


PYCACHE = Path(tempfile.gettempdir()) / f"tradeul-maint-bench-pycache-{os.getuid()}"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the tool's variables, and with bytecode caching on.

    An installed package runs from compiled bytecode; with PYTHONDONTWRITEBYTECODE set (as
    in some containers) every run would compile the tool's modules from source instead.
    PYTHONPYCACHEPREFIX keeps those files out of the repository, for every module alike
    (the baseline's too); the first, untimed runs fill it.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TRADEUL_MAINT_") and k not in ("REDIS_URL", "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env.update(extra)
    return env


@dataclass
class Timed:
    """Wall times (seconds) and peak RSS (KB) of repeated runs of one command, each checked for silence."""

    label: str
    argv: list[str]
    env: dict[str, str] | None = None
    cwd: Path | None = None
    before_each: Callable[[], None] | None = None  # untimed, e.g. emptying a cache
    expect: int = 0
    silent: bool = True
    walls: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)

    def once(self) -> None:
        if self.before_each is not None:
            self.before_each()
        wall, rss, code, out = run_process(self.argv, self.env, self.cwd)
        if code != self.expect or (self.silent and out):
            raise SystemExit(f"{self.label}: exit {code} (expected {self.expect}), output:\n{out}")
        self.walls.append(wall)
        self.rss_kb.append(rss)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def rss_mb(self) -> float:
        return max(self.rss_kb) / 1024 if GNU_TIME else float("nan")


def run_process(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
                ) -> tuple[float, int, int, str]:
    """(wall seconds, peak RSS KB, exit code, stdout+stderr) of one run.

    The peak RSS comes from GNU time: a child's own ru_maxrss starts at its parent's RSS
    (fork copies the page table counts), so the benchmark process cannot measure it itself.
    GNU time is a small C program; it wraps every command alike, the baseline included.
    """
    with tempfile.NamedTemporaryFile("r") as rss:
        wrapped = [GNU_TIME, "-q", "-f", "%M", "-o", rss.name, *argv] if GNU_TIME else argv
        started = time.perf_counter()
        proc = subprocess.run(wrapped, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        wall = time.perf_counter() - started
        kb = int(rss.read().strip() or 0) if GNU_TIME else 0
    return wall, kb, proc.returncode, proc.stdout.decode(errors="replace")


def interleave(commands: list[Timed], runs: int, warmup: int = 2) -> None:
    """`runs` rounds, each running every command once, so drift on a shared machine hits all alike."""
    for command in commands:
        for _ in range(warmup):
            command.once()
        command.walls.clear()
        command.rss_kb.clear()
    for _ in range(runs):
        for command in commands:
            command.once()


def fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
