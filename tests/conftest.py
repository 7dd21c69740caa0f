"""Test fixtures: a real redis-server on a unix socket, flushed per test, and helpers to run the CLI.

One server serves the whole session (starting one per test costs more than the tests);
each test gets an empty database and its own state and log directories, with the
calendar cache copied in so no test pays for building it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import redis

from tradeul_maint.base.redact import forget_all
from tradeul_maint.config.settings import CalendarOverrides
from tradeul_maint.plan.calendar import load_calendar
from tradeul_maint.redisio.embedded import redis_server_binary

from project import REPO, Project  # noqa: E402,F401 - the tests import both from here too



def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(directory: Path, *args: str, tcp: bool = False) -> tuple[subprocess.Popen, str]:
    """A real redis-server with its data in `directory`, on a unix socket there or a free loopback
    port, returned with its URL once it accepts connections; `args` add server options."""
    if tcp:
        port = free_port()
        listen, url = ["--port", str(port), "--bind", "127.0.0.1"], f"redis://127.0.0.1:{port}/0"
        address, family = ("127.0.0.1", port), socket.AF_INET
    else:
        path = str(directory / "redis.sock")
        listen, url = ["--port", "0", "--unixsocket", path], f"unix://{path}"
        address, family = path, socket.AF_UNIX
    proc = subprocess.Popen([redis_server_binary(), *listen, "--dir", str(directory), "--save", "",
                             "--appendonly", "no", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.socket(family) as conn:
                conn.connect(address)
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"redis-server in {directory} did not start")
            time.sleep(0.02)


def serve_redis(directory: Path, *args: str, tcp: bool = False) -> Iterator[str]:
    """`start_redis` as a fixture's body: yields the URL, stops the server afterwards."""
    proc, url = start_redis(directory, *args, tcp=tcp)
    yield url
    proc.terminate()
    proc.wait(10)


def start_sentinel(directory: Path, master_port: int, password: str | None = None) -> tuple[subprocess.Popen, int]:
    """A real Sentinel (`redis-server --sentinel`) on a free loopback port, monitoring `mymaster` at
    `master_port`; with `password`, both it and the master require it. Returned once it knows its master."""
    port = free_port()
    conf = directory / "sentinel.conf"  # a Sentinel rewrites its config file: one of its own
    auth = f"sentinel auth-pass mymaster {password}\nrequirepass {password}\n" if password else ""
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n{auth}")
    proc = subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=password, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            if client.sentinel_get_master_addr_by_name("mymaster"):
                client.close()
                return proc, port
        except redis.RedisError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"the Sentinel in {directory} did not start")
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def fresh_secrets():
    """Each test starts as a fresh process does, knowing no password: one test's must not hide another's."""
    forget_all()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server for the session, on a unix socket in a temporary directory."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_url(redis_server):
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def calendar_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("calendar-cache")
    load_calendar("XNYS", CalendarOverrides(), cache)
    return cache


@pytest.fixture
def project(tmp_path, redis_url, calendar_cache, monkeypatch) -> Iterator[Project]:
    p = Project(tmp_path, redis_url)
    shutil.copytree(calendar_cache, p.state_dir / "cache")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield p
    # Task modules written by one test must not be found, already imported, by the next.
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


MARKER_SCRIPT = """\
import os, sys, time
name, date, sleep, fail = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "fail"
with open(os.path.join(os.path.dirname(__file__), name + ".started"), "a") as f:
    f.write(date + "\\n")
time.sleep(sleep)
if fail:
    print("something went wrong in " + name, file=sys.stderr)
    sys.exit(3)
with open(os.path.join(os.path.dirname(__file__), name + ".count"), "a") as f:
    f.write(date + "\\n")
"""


def marker_tasks(directory: Path, names: list[str], deps: dict[str, list[str]] | None = None,
                 sleep: dict[str, float] | float = 0.0, fail: tuple[str, ...] = (), extra: str = "") -> str:
    """[[tasks]] tables of command tasks that append a line to `<name>.count` each time they complete.

    `<name>.started` gets a line when one starts; tasks in `fail` exit 3 instead of completing.
    """
    script = directory / "marker.py"
    script.write_text(MARKER_SCRIPT)
    deps = deps or {}
    out = []
    for name in names:
        pause = sleep.get(name, 0.0) if isinstance(sleep, dict) else sleep
        argv = [sys.executable, str(script), name, "{date}", str(pause), "fail" if name in fail else "ok"]
        after = f"\nafter = {deps[name]!r}".replace("'", '"') if name in deps else ""
        args = ", ".join(f"'{a}'" for a in argv)
        out.append(f'[[tasks]]\nname = "{name}"\ncommand = [{args}]{after}\n{extra}')
    return "\n".join(out)


def count_runs(directory: Path, name: str, what: str = "count") -> list[str]:
    path = directory / f"{name}.{what}"
    return path.read_text().split() if path.exists() else []


def wait_for(predicate, timeout: float = 20.0) -> bool:
    """Poll `predicate` until it holds or `timeout` passes (for subprocess tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def processes_running(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


PUSHGATEWAY_BINARY = "/usr/bin/prometheus-pushgateway"  # Debian's prometheus-pushgateway (.ci/system-packages)


class Pushgateway:
    """A real Prometheus Pushgateway on a free loopback port, keeping what is pushed in memory only."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([PUSHGATEWAY_BINARY, f"--web.listen-address=127.0.0.1:{self.port}",
                                      "--persistence.file=", "--web.enable-admin-api", "--log.level=error"], cwd=directory,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for(lambda: self._ready() or self.proc.poll() is not None, timeout=30) or not self._ready():
            self.close()
            raise RuntimeError(f"the Pushgateway on port {self.port} did not start")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        """What Prometheus scrapes from it: the pushed groups, each sample with its job and grouping labels."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            return response.read().decode()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="session")
def pushgateway_server(tmp_path_factory) -> Iterator[Pushgateway]:
    if not os.access(PUSHGATEWAY_BINARY, os.X_OK):
        pytest.skip(f"{PUSHGATEWAY_BINARY} not installed (Debian: apt-get install prometheus-pushgateway; "
                    ".ci/system-packages does it where it can)")
    gateway = Pushgateway(tmp_path_factory.mktemp("pushgateway"))
    yield gateway
    gateway.close()


@pytest.fixture
def pushgateway(pushgateway_server) -> Pushgateway:
    """The session's Pushgateway, emptied (its every group deleted) for each test."""
    request = urllib.request.Request(f"{pushgateway_server.url}/api/v1/admin/wipe", method="PUT")
    urllib.request.urlopen(request, timeout=10).close()
    return pushgateway_server


class HttpErrorServer:
    """A loopback endpoint that answers anything with an HTTP error and closes, as nginx does:
    what a Redis URL pointing at a web server reaches."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
