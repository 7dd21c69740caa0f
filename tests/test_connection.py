"""Redis URLs (password, Sentinel), redaction, and the lock's lease under a long task."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import redis

from conftest import count_runs, free_port, marker_tasks, processes_running, start_redis, wait_for
from tradeul_maint.connection import redact
from tradeul_maint.embedded import redis_server_binary

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
    project.write_config("[redis]\nlock_lease_seconds = 1\n" + marker_tasks(project.root, ["a"], sleep=3))
    runner = project.spawn("run", "--date", DAY)
    deadline = time.monotonic() + 20
    while not count_runs(project.root, "a", "started") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2)  # twice the lease
    assert r.get("maintenance:lock") is not None
    busy = project.run("run", "--date", "2026-11-24")
    assert busy.returncode == 75
    out, err = runner.communicate(timeout=30)
    assert runner.returncode == 0, err
    assert r.get("maintenance:lock") is None


@pytest.mark.slow
def test_redis_lost_mid_cycle_stops_the_tasks_and_exits_75(project, tmp_path, servers):
    proc, port = start_server(tmp_path, "dies")
    project.write_config("[redis]\nlock_lease_seconds = 1\n" + marker_tasks(project.root, ["a", "b"], sleep={"a": 30}))
    runner = project.spawn("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    deadline = time.monotonic() + 20
    while not count_runs(project.root, "a", "started") and time.monotonic() < deadline:
        time.sleep(0.05)
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
