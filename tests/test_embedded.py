"""The embedded Redis: used when no URL is given anywhere; state survives, no server is left behind."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import Project, count_runs, marker_tasks, processes_running, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded(tmp_path, calendar_cache, monkeypatch) -> Project:
    p = Project(tmp_path, None)
    shutil.copytree(calendar_cache, p.state_dir / "cache")
    monkeypatch.chdir(tmp_path)
    return p


def servers_for(state_dir: Path) -> list[int]:
    """Live redis-server processes serving this state directory (the server runs in its data dir)."""
    found = []
    for pid in processes_running("redis-server"):
        try:
            if str(state_dir) in Path(f"/proc/{pid}/cwd").resolve().as_posix():
                found.append(pid)
        except OSError:
            continue
    return found


def test_state_survives_between_invocations_and_no_server_is_left(embedded):
    embedded.write_config(marker_tasks(embedded.root, ["a"]))
    env = {"REDIS_URL": ""}
    first = embedded.run("run", "--date", "2026-11-25", **env)
    assert first.returncode == 0, first.stderr
    assert servers_for(embedded.state_dir) == []
    second = embedded.run("run", "--date", "2026-11-25", **env)
    assert second.returncode == 0 and "already done" in second.stdout
    assert count_runs(embedded.root, "a") == ["2026-11-25"]
    assert (embedded.state_dir / "redis" / "appendonly.aof").exists()
    assert servers_for(embedded.state_dir) == []


def test_concurrent_invocations_share_one_server_lose_nothing_and_leave_none(embedded):
    days = ["2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20", "2026-11-23", "2026-11-24"]
    embedded.write_config(marker_tasks(embedded.root, ["a"], sleep=0.3))
    procs = [embedded.spawn("run", "--date", day) for day in days]
    codes = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        codes.append((proc.returncode, err))
    # A manual run that finds the lock busy exits 75; its session is simply not run yet.
    assert all(code in (0, 75) for code, _ in codes), codes
    ran = sorted(count_runs(embedded.root, "a"))
    assert len(ran) == sum(code == 0 for code, _ in codes) >= 1
    assert servers_for(embedded.state_dir) == []
    # Everything that ran is still recorded after the server went away and came back.
    sock = embedded.state_dir / "redis" / "redis.sock"
    result = embedded.run("run", "--date", ran[0])
    assert "already done" in result.stdout, result.stderr
    assert not sock.exists()


def test_overlapping_invocations_use_a_single_server(embedded):
    # The long run's task waits for the test to let it go (a barrier, not a sleep): it runs until then.
    release, started = embedded.root / "release", embedded.root / "started"
    waits = (f"import os, time\nopen({str(started)!r}, 'w').close()\n"
             f"while not os.path.exists({str(release)!r}): time.sleep(0.05)\n")
    embedded.write_config(f'[[tasks]]\nname = "a"\ncommand = ["{sys.executable}", "-c", {json.dumps(waits)}]\n')
    long_run = embedded.spawn("run", "--date", "2026-11-25")
    try:
        assert wait_for(started.exists)
        overlapping = embedded.spawn("run", "--date", "2026-11-24")
        assert len(servers_for(embedded.state_dir)) == 1
        overlapping.communicate(timeout=60)
        assert len(servers_for(embedded.state_dir)) == 1  # still serving the long run
    finally:
        release.touch()
        long_run.communicate(timeout=60)
    assert servers_for(embedded.state_dir) == []


def test_a_relative_state_dir_works(embedded):
    """redis-server changes to its data directory before it opens its log: the paths it gets must be absolute."""
    embedded.write_config(marker_tasks(embedded.root, ["a"]))
    result = embedded.run("--state-dir", "state", "run", "--date", "2026-11-25", REDIS_URL="")
    assert result.returncode == 0, result.stderr
    assert (embedded.state_dir / "redis" / "redis-server.log").is_file()
    assert servers_for(embedded.state_dir) == []
