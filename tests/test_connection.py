"""Redis URLs (password, Sentinel), redaction, and the lock's lease under a long task."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import redis

from conftest import HttpErrorServer, count_runs, free_port, marker_tasks, processes_running, start_redis, wait_for
from tradeul_maint.redisio.connection import redact
from tradeul_maint.redisio.embedded import redis_server_binary

DAY = "2026-11-25"


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://user:s3cret@host:6380", "rediss://user:***@host:6380"),
        ("redis+sentinel://u:s3cret@h1:26379,h2:26379/mymaster/2", "redis+sentinel://u:***@h1:26379,h2:26379/mymaster/2"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_redact_hides_passwords(url, shown):
    assert redact(url) == shown


def start_server(tmp_path, name: str, *args: str) -> tuple[subprocess.Popen, int]:
    directory = tmp_path / name
    directory.mkdir()
    proc, url = start_redis(directory, *args, tcp=True)
    return proc, int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture
def servers():
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_password_protected_redis_works_and_the_password_never_shows(project, tmp_path, servers):
    proc, port = start_server(tmp_path, "auth", "--requirepass", "hunter2")
    servers.append(proc)
    project.write_config(marker_tasks(project.root, ["a"], fail=("a",)))
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=url)
    assert result.returncode == 1  # the task fails; the connection worked
    client = redis.Redis(port=port, password="hunter2", decode_responses=True)
    assert json.loads(client.get(f"maintenance:status:{DAY}"))["tasks"] == {"a": "failed"}
    wrong = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=f"redis://:wrong-pass@127.0.0.1:{port}/0")
    assert wrong.returncode == 78 and "rejected the credentials" in wrong.stderr
    shown = result.stdout + result.stderr + wrong.stdout + wrong.stderr
    logs = "".join(p.read_text() for p in project.log_dir.glob("*.log*"))
    assert "hunter2" not in shown + logs and "wrong-pass" not in shown + logs


def test_sentinel_url_resolves_the_master(project, tmp_path, servers):
    master, master_port = start_server(tmp_path, "master")
    servers.append(master)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n")
    sentinel_port = free_port()
    sentinel = subprocess.Popen([redis_server_binary(), str(conf), "--sentinel", "--port", str(sentinel_port),
                                 "--bind", "127.0.0.1", "--dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers.append(sentinel)
    project.write_config(marker_tasks(project.root, ["a"]))
    url = f"redis+sentinel://127.0.0.1:{sentinel_port}/mymaster/3"
    deadline = time.monotonic() + 10
    while True:
        result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=url)
        if result.returncode != 75 or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the sentinel needs a moment to learn its master
    assert result.returncode == 0, result.stderr
    client = redis.Redis(port=master_port, db=3, decode_responses=True)
    assert json.loads(client.get(f"maintenance:status:{DAY}"))["all_success"] is True


@pytest.mark.parametrize("url", ["redis+sentinel://127.0.0.1:26379", "redis+sentinel://h:x/svc", "mongodb://x"])
def test_bad_redis_urls_are_configuration_errors(project, url):
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.cli("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=url)
    assert result.exit_code == 78 and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_task_longer_than_the_lease_keeps_the_lock(project, r):
    # The task outlasts the lease many times over, so a loaded machine's slow process start cannot let it end
    # before the second run asks for the lock.
    project.write_config("[redis]\nlock_lease_seconds = 1\n" + marker_tasks(project.root, ["a"], sleep=8))
    runner = project.spawn("run", "--date", DAY)
    try:
        assert wait_for(lambda: count_runs(project.root, "a", "started"))
        time.sleep(2)  # twice the lease
        assert r.get("maintenance:lock") is not None
        busy = project.run("run", "--date", "2026-11-24")
        assert busy.returncode == 75, busy.stderr
    finally:
        out, err = runner.communicate(timeout=30)
    assert runner.returncode == 0, err
    assert r.get("maintenance:lock") is None


@pytest.mark.slow
def test_redis_lost_mid_cycle_stops_the_tasks_and_exits_75(project, tmp_path, servers):
    proc, port = start_server(tmp_path, "dies")
    project.write_config("[redis]\nlock_lease_seconds = 1\n" + marker_tasks(project.root, ["a", "b"], sleep={"a": 30}))
    runner = project.spawn("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    assert wait_for(lambda: count_runs(project.root, "a", "started"), 60)  # (a loaded machine may take a while)
    proc.kill()
    proc.wait(10)
    started = time.monotonic()
    out, err = runner.communicate(timeout=30)
    assert runner.returncode == 75, err
    assert time.monotonic() - started < 10
    # Whichever notices first (the lock's renewal, the supervisor's lease watch, a state write), it says Redis.
    last = err.strip().splitlines()[-1]
    assert "lost the run lock" in last or "lost the connection to Redis" in last, err
    assert count_runs(project.root, "b", "started") == []
    assert wait_for(lambda: not processes_running(str(project.root / "marker.py")), 5)  # no orphan task


# --- endpoints that are not Redis, and URLs that do not mean what they say --------------------


@pytest.fixture(params=["stdlib", "nginx-like"])
def http_port(request):
    """An HTTP server on loopback: Python's own, or one answering like nginx."""
    if request.param == "nginx-like":
        server = HttpErrorServer()
        yield server.port
        server.close()
        return
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_an_http_server_is_a_configuration_error_not_a_protocol_error(project, http_port):
    project.write_config(marker_tasks(project.root, ["a"]))
    url = f"redis://127.0.0.1:{http_port}/0"
    for result in (project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=url),
                   project.run("run", "--now", f"{DAY}T17:05", TRADEUL_MAINT_REDIS_URL=url)):  # the cron tick
        assert result.returncode == 78, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert f"127.0.0.1:{http_port}/0 is not a Redis server" in line and "check the host and port" in line
    assert count_runs(project.root, "a", "started") == []


@pytest.mark.parametrize("path, message", [
    ("/99", "has no database 99"),
    ("/notadb", "the path must be a database number"),
    ("/0/1", "the path must be a database number"),
    ("/0?db=x", "invalid value for option 'db'"),
    ("/0?colour=blue", "unknown option 'colour'"),
])
def test_a_database_that_does_not_exist_is_a_configuration_error(project, tmp_path, servers, path, message):
    proc, port = start_server(tmp_path, "dbs")
    servers.append(proc)
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.cli("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=f"redis://127.0.0.1:{port}{path}")
    assert result.exit_code == 78, result.output
    [line] = result.stderr.strip().splitlines()
    assert message in line


MALFORMED = [
    "redis://u:AAAq/BBBq@127.0.0.1:{port}/0",
    "redis://:AAAq#BBBq@127.0.0.1:{port}",
    "redis://:AAAq?BBBq@127.0.0.1:{port}/0",
    "redis://:AAAq@BBBq@127.0.0.1:{port}/0",
    "redis+sentinel://:AAAq/BBBq@127.0.0.1:{port}/mymaster",
    "rediss://admin:AAAq/BBBq@127.0.0.1:{port}/0",
]


@pytest.mark.parametrize("url", MALFORMED)
@pytest.mark.parametrize("verbose", [False, True])
def test_no_part_of_a_malformed_urls_password_is_ever_shown(project, tmp_path, servers, url, verbose):
    proc, port = start_server(tmp_path, "auth", "--requirepass", "AAAq/BBBq")
    servers.append(proc)
    project.write_config(marker_tasks(project.root, ["a"]))
    args = ["-v"] if verbose else []
    result = project.run(*args, "run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=url.format(port=port))
    assert result.returncode == 78, result.stderr
    shown = result.stdout + result.stderr + "".join(p.read_text() for p in project.log_dir.glob("*.log*"))
    assert "AAAq" not in shown and "BBBq" not in shown
    assert "percent-encode" in result.stderr and "%2F" in result.stderr
    if verbose:
        assert "Traceback" in result.stderr  # printed, scrubbed
    else:
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_percent_encoded_password_with_special_characters_works(project, tmp_path, servers):
    proc, port = start_server(tmp_path, "auth", "--requirepass", "p/a#s?s@w:d")
    servers.append(proc)
    project.write_config(marker_tasks(project.root, ["a"]))
    url = f"redis://:p%2Fa%23s%3Fs%40w%3Ad@127.0.0.1:{port}/0"
    result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=url)
    assert result.returncode == 0, result.stderr


def test_an_unexpected_errors_traceback_is_scrubbed_with_v(project, monkeypatch):
    """The traceback of a bug (exit 70) with -v: a URL's password in its message is hidden."""
    from tradeul_maint.core import actions as core

    def broken(*args, **kwargs):
        raise RuntimeError("cannot use redis://admin:s3cr3tpw@db:6379/0 (REDIS_PASSWORD=s3cr3tpw)")

    monkeypatch.setattr(core, "run", broken)
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.cli("-v", "run", "--date", DAY)
    assert result.exit_code == 70
    assert "Traceback" in result.stderr and "RuntimeError" in result.stderr
    assert "s3cr3tpw" not in result.output + result.stderr


@pytest.mark.parametrize("server_args, user", [
    (("--rename-command", "INFO", ""), None),  # INFO renamed away, as on some managed services
    ((), "noinfo"),  # an ACL user that may not run INFO
])
def test_a_server_that_will_not_answer_info_is_asked_ping(project, tmp_path, servers, server_args, user):
    proc, port = start_server(tmp_path, "noinfo", *server_args)
    servers.append(proc)
    url = f"redis://127.0.0.1:{port}/0"
    if user:
        admin = redis.Redis(port=port)
        admin.acl_setuser(user, enabled=True, passwords=["+Ni4-pass"], keys=["*"], commands=["+@all", "-info"])
        admin.close()
        url = f"redis://{user}:Ni4-pass@127.0.0.1:{port}/0"
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=url)
    assert result.returncode == 0, result.stderr
    assert json.loads(redis.Redis(port=port).get(f"maintenance:status:{DAY}"))["all_success"] is True
