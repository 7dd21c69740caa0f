"""Pings ([notify] ping_url), healthchecks-style, against HTTP servers on loopback.

`/start` when a cycle starts, the URL itself when it is done, `/fail` with the summary
when not. An endpoint that is down, hangs after accepting, or trickles its answer a byte
at a time costs each ping at most `ping_timeout` and changes neither the exit code nor
the state.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from conftest import free_port, marker_tasks, wait_for

SESSION = "2026-11-25"
AFTER = "2026-11-26T12:00"


class Recorder(BaseHTTPRequestHandler):
    """Answers 200 to everything and records (method, path, body)."""

    seen: list[tuple[str, str, str]]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.server.seen.append((self.command, self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


class Trickler(BaseHTTPRequestHandler):
    """Answers one byte every 0.2 s: every read completes well within urllib's per-read timeout."""

    def _answer(self) -> None:
        self.server.seen.append((self.command, self.path, ""))
        deadline = time.monotonic() + 30
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 10_000:
                if time.monotonic() > deadline:
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the client gave up

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


def serve(handler) -> Iterator[tuple[str, list]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ping/5f0c2a9e", server.seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def endpoint():
    yield from serve(Recorder)


@pytest.fixture
def trickling():
    yield from serve(Trickler)


@pytest.fixture
def hung():
    """Accepts connections (the kernel's backlog does) and never reads or answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/ping/hung"


def configure(project, url: str, fail: tuple[str, ...] = (), timeout: float = 5, sleep: float = 0.0) -> None:
    project.write_config(f'[notify]\nping_url = "{url}"\nping_timeout = {timeout}\n'
                         + marker_tasks(project.root, ["a", "b"], deps={"b": ["a"]}, fail=fail, sleep=sleep))


def test_a_successful_cycle_pings_start_then_success(project, endpoint, r):
    url, seen = endpoint
    configure(project, url)
    assert project.cli("run", "--date", SESSION, "--now", AFTER).exit_code == 0
    assert seen == [("GET", "/ping/5f0c2a9e/start", ""), ("GET", "/ping/5f0c2a9e", "")]


def test_a_failed_cycle_pings_fail_with_the_summary(project, endpoint, r):
    url, seen = endpoint
    configure(project, url, fail=("b",))
    result = project.cli("run", "--date", SESSION, "--now", AFTER)
    assert result.exit_code == 1
    assert [(m, p) for m, p, _ in seen] == [("GET", "/ping/5f0c2a9e/start"), ("POST", "/ping/5f0c2a9e/fail")]
    body = seen[1][2].splitlines()
    assert body[0].startswith(f"{SESSION}: 1/2 tasks completed in ") and body[0].endswith("; not done")
    assert body[1].startswith("  b failed: ") and "failed with exit code 3" in body[1]


def test_a_cycle_that_leaves_a_task_waiting_for_the_close_pings_success_not_fail(project, endpoint, r):
    url, seen = endpoint
    project.write_config(f'[notify]\nping_url = "{url}"\n' + marker_tasks(project.root, ["a"]) +
                         '[[tasks]]\nname = "reset"\nbuiltin = "redis.delete_keys"\n'
                         'params = { patterns = ["realtime:*"] }\nmarket_closed_only = true\n')
    assert project.cli("run", "--date", SESSION, "--now", "2026-11-26T10:00").exit_code == 0  # Thanksgiving: closed
    assert project.cli("run", "--date", "2026-11-27", "--now", "2026-11-27T10:00").exit_code == 0  # open till 13:00
    assert seen[2:] == [("GET", "/ping/5f0c2a9e/start", ""), ("GET", "/ping/5f0c2a9e", "")]
    assert json.loads(r.get("maintenance:status:2026-11-27"))["tasks"]["reset"] == "pending"


def test_a_catch_up_pings_each_session_oldest_first(project, endpoint, r):
    url, seen = endpoint
    configure(project, url)
    assert project.cli("recover", "--since", "2026-11-24", "--until", "2026-11-25", "--now", AFTER).exit_code == 0
    assert [p.rsplit("/", 1)[-1] for _, p, _ in seen] == ["start", "5f0c2a9e", "start", "5f0c2a9e"]


def test_an_endpoint_that_is_down_changes_nothing(project, r):
    configure(project, f"http://127.0.0.1:{free_port()}/ping/down", fail=("b",))
    result = project.run("run", "--date", SESSION, "--now", AFTER)
    assert result.returncode == 1  # the task's failure, as without a ping URL
    assert json.loads(r.get(f"maintenance:status:{SESSION}"))["tasks"] == {"a": "completed", "b": "failed"}
    assert "ping" not in result.stdout + result.stderr  # cron mails the maintenance, not the monitoring
    failures = [json.loads(line) for line in (project.log_dir / "maintenance.log").read_text().splitlines()
                if '"ping_failed"' in line]
    assert [f["ping"] for f in failures] == ["/start", "/fail"]
    assert all(f["host"] == "127.0.0.1" and "down" not in json.dumps(f) for f in failures)  # never the whole URL


@pytest.mark.slow
@pytest.mark.parametrize("server", ["hung", "trickling"])
def test_a_hung_endpoint_costs_each_ping_at_most_its_timeout(project, r, request, server):
    url = request.getfixturevalue(server)
    url = url if isinstance(url, str) else url[0]
    configure(project, url, fail=("b",), timeout=1)
    started = time.monotonic()
    result = project.run("run", "--date", SESSION, "--now", AFTER, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr  # exactly as it would exit without pings
    assert json.loads(r.get(f"maintenance:status:{SESSION}"))["tasks"] == {"a": "completed", "b": "failed"}
    # Two pings of 1 s each were waited for, and not a moment longer than the run's own work.
    assert 2.0 <= elapsed < 2.0 + 10, elapsed
    log = (project.log_dir / "maintenance.log").read_text()
    assert log.count('"error": "no answer within 1s"') == 2


def test_sigterm_during_a_cycle_pings_fail_with_the_reason(project, endpoint, r):
    url, seen = endpoint
    project.write_config(f'[notify]\nping_url = "{url}"\n' + marker_tasks(project.root, ["a", "b", "c"],
                                                                           sleep={"b": 60}))
    proc = project.spawn("run", "--date", SESSION, "--now", AFTER)
    try:
        assert wait_for(lambda: (project.root / "b.started").exists(), timeout=30)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 143
    assert [(m, p) for m, p, _ in seen] == [("GET", "/ping/5f0c2a9e/start"), ("POST", "/ping/5f0c2a9e/fail")]
    assert seen[1][2] == f"{SESSION}: cycle stopped: Interrupted: SIGTERM"


@pytest.mark.parametrize("url, problem", [
    ("hc.example/ping/secret-uuid", "expected an http:// or https:// URL"),
    ("https://hc.example/ping/secret uuid", "percent-encode"),  # urllib raises InvalidURL in the ping thread
    ("https://hc.example/ping/secret\\tuuid", "percent-encode"),
    ("https://hc.example/ping/secret-üuid", "percent-encode"),
    ("https://hc.example:99999/ping/secret-uuid", "port"),
    ("https://[::1/ping/secret-uuid", "IPv6"),
])
def test_a_ping_url_urllib_would_refuse_is_a_config_error_that_never_shows_its_path(project, url, problem):
    project.write_config(f'[notify]\nping_url = "{url}"\n' + marker_tasks(project.root, ["a"]))
    result = project.cli("run", "--date", SESSION, "--now", AFTER)
    assert result.exit_code == 78
    [line] = result.stderr.strip().splitlines()
    assert "[notify] ping_url" in line and problem in line and "secret" not in result.output + result.stderr
