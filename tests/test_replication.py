"""[redis] min_replicas: WAIT after the lock and every state write, against a real primary and replica on loopback.

A write the replicas did not confirm in time is in doubt: no further task starts, the run ends
with 75 and one line naming the replicas, and the next run resumes from what the primary holds.
`check` reports the replicas against min_replicas and the eviction policy. The failover trials
(a Sentinel promoting a replica that lags) are bench/faults.py's `replica-frozen`, `failover` and
`failover-unconfirmed`, with a subset in test_faults.py; Redis Cluster is in test_cluster.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import redis

from conftest import count_runs, marker_tasks, start_redis, wait_for
from tradeul_maint.core.basis import refused

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import faults  # noqa: E402

DAY = "2026-11-25"
NOW = "2026-11-25T18:00"

# A task that makes the replica lag from now on: frozen, and its link closed by the primary.
CUT = """\
import os, signal


def cut(ctx):
    os.kill(ctx.params["replica_pid"], signal.SIGSTOP)
    ctx.redis.execute_command("CLIENT", "KILL", "TYPE", "replica")
"""


@pytest.fixture
def replicas(tmp_path):
    rs = faults.ReplicaSet(tmp_path / "replicas", sentinel=False)
    yield rs
    rs.close()


def checked(project, **env) -> dict[str, tuple[bool, str]]:
    """`check --json`: each check's (ok, detail) by name; a warning's ok is "warn"."""
    doc = json.loads(project.cli("check", "--json", "--now", NOW, **env).stdout)
    return {c["name"]: ("warn" if c["ok"] and c["warning"] else c["ok"], c["detail"]) for c in doc["checks"]}


def replicated(project, rs: faults.ReplicaSet, tasks: str, min_replicas: int = 1, extra: str = "") -> None:
    project.redis_url = rs.url
    project.write_config(f"[redis]\nmin_replicas = {min_replicas}\nreplica_timeout_seconds = 0.3\n{extra}" + tasks)


def test_a_frozen_replica_stops_a_run_before_its_first_task(project, replicas):
    replicated(project, replicas, marker_tasks(project.root, ["a"]))
    replicas.freeze()
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 75, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("tradeul-maint: only 0 of the 1 replica [redis] min_replicas asks for acknowledged taking "
                           f"the run lock within 0.3 s (the primary sees 1 replica: 127.0.0.1:{replicas.replica.port} "
                           "online, lag "), line
    assert count_runs(project.root, "a", "started") == []
    with replicas.primary.client() as c:
        assert c.get("maintenance:lock") is None and c.get(f"maintenance:status:{DAY}") is None


def test_a_write_in_doubt_starts_no_further_task_and_the_next_run_resumes_from_the_primary(project, replicas):
    (project.root / "cutter.py").write_text(CUT)
    replicated(project, replicas, f'[[tasks]]\nname = "a"\npython = "cutter:cut"\n'
                                  f"params = {{ replica_pid = {replicas.replica.proc.pid} }}\n"
               + marker_tasks(project.root, ["b"], deps={"b": ["a"]}))
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 75, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("tradeul-maint: only 0 of the 1 replica [redis] min_replicas asks for acknowledged the "
                           "state write within 0.3 s (the primary sees no replica)"), line
    assert "no further task was started" in line and "next run resumes" in line
    assert count_runs(project.root, "b", "started") == []
    with replicas.primary.client() as c:
        # The write is in doubt, not undone: the primary has a's completion, and the lock is given back.
        assert json.loads(c.get(f"maintenance:status:{DAY}"))["tasks"] == {"a": "completed", "b": "in_progress"}
        assert c.get("maintenance:lock") is None
    replicas.thaw()
    assert faults.wait_until(replicas.replicating, 10)
    again = project.cli("run", "--date", DAY)
    assert again.exit_code == 0, again.output
    assert count_runs(project.root, "b") == [DAY]  # a, whose completion landed on the primary, did not run again
    with replicas.replica.client() as c:
        assert json.loads(c.get(f"maintenance:status:{DAY}"))["all_success"] is True  # the replica has it too


def test_a_lease_renewal_the_replicas_miss_stops_the_running_task_and_the_run(project, replicas):
    """A lease the replicas may not have can vanish in a failover while its task runs (two runners at once):
    the renewal is waited for too, and one that is not confirmed stops the task (not recorded done), exit 75."""
    replicated(project, replicas, marker_tasks(project.root, ["a"], sleep=30), extra="lock_lease_seconds = 1.5\n")
    runner = project.spawn("run", "--date", DAY)
    assert wait_for(lambda: count_runs(project.root, "a", "started"), 20)
    replicas.freeze()
    _, err = runner.communicate(timeout=30)
    assert runner.returncode == 75, err
    [line] = err.strip().splitlines()
    assert "acknowledged the renewal of the run lock's lease within 0.3 s" in line, line
    assert count_runs(project.root, "a") == []  # stopped, not completed
    with replicas.primary.client() as c:
        assert json.loads(c.get(f"maintenance:status:{DAY}"))["tasks"] == {"a": "in_progress"}  # run again next time


def test_a_replica_that_keeps_up_lets_the_run_complete_with_each_write_waited_for(project, replicas):
    replicated(project, replicas, marker_tasks(project.root, ["a", "b"], deps={"b": ["a"]}))
    with replicas.primary.client() as c:
        c.config_resetstat()
        result = project.run("run", "--date", DAY)
        assert result.returncode == 0, result.stderr
        waits = c.info("commandstats")["cmdstat_wait"]["calls"]
    # Taking the lock; the cycle's first write; a starting; a ended with b starting; b ended; the end of the
    # cycle. Not the release: it gives the lock up and promises nothing.
    assert waits == 6
    with replicas.replica.client() as c:
        assert json.loads(c.get(f"maintenance:status:{DAY}"))["all_success"] is True


def test_check_reports_the_replicas_against_min_replicas(project, replicas):
    replicated(project, replicas, marker_tasks(project.root, ["a"]))
    ok, detail = checked(project)["replicas"]
    assert ok and detail.startswith(f"the primary sees 1 replica: 127.0.0.1:{replicas.replica.port} online, lag ")
    assert detail.endswith("min_replicas = 1: a test write was confirmed by WAIT within 0.3 s"), detail
    replicated(project, replicas, marker_tasks(project.root, ["a"]), min_replicas=2)
    ok, detail = checked(project)["replicas"]
    assert not ok and detail.startswith("only 1 of the 2 replicas [redis] min_replicas asks for acknowledged a test "
                                        "write within 0.3 s") and "every run would stop (exit 75)" in detail
    replicated(project, replicas, marker_tasks(project.root, ["a"]))
    replicas.freeze()
    ok, detail = checked(project)["replicas"]
    assert not ok and detail.startswith("only 0 of the 1 replica "), detail
    assert project.cli("check", "--now", NOW).exit_code == 1


def test_wait_aof_on_a_redis_without_waitaof_falls_back_to_wait_and_check_says_so(project, replicas):
    replicated(project, replicas, marker_tasks(project.root, ["a"]), extra="wait_aof = true\n")
    result = project.run("run", "--date", DAY)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (project.log_dir / "maintenance.log").read_text().splitlines()]
    assert [e["event"] for e in events].count("waitaof_unsupported") == 1  # once per run, not per write
    ok, detail = checked(project)["replicas"]
    assert ok == "warn" and "wait_aof = true, but this Redis has no WAITAOF (7.2+): WAIT alone confirms" in detail


@pytest.mark.parametrize("policy, ok", [("noeviction", True), ("allkeys-lru", "warn"), ("volatile-lru", "warn"),
                                        ("volatile-ttl", "warn"), ("allkeys-random", "warn")])
def test_check_warns_of_an_eviction_policy_that_can_evict_the_tools_keys(project, tmp_path, policy, ok):
    proc, url = start_redis(tmp_path, "--maxmemory", "100mb", "--maxmemory-policy", policy)
    try:
        project.write_config(marker_tasks(project.root, ["a"]))
        passed, detail = checked(project, TRADEUL_MAINT_REDIS_URL=url)["eviction"]
        assert passed == ok and policy in detail and ("evict the tool's keys" in detail) == (ok == "warn"), detail
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("redis_table, url, message", [
    ("min_replicas = 1\n", "", "[redis] min_replicas = 1, and no Redis URL is set: the embedded Redis has no replicas"),
    ("min_replicas = -1\n", None, "[redis] min_replicas = -1: must be at least 0"),
    ("min_replicas = 1.5\n", None, "[redis] min_replicas"),
    ("replica_timeout_seconds = 3\n", None, "[redis] replica_timeout_seconds = 3: must be at most 2"),
    ("replica_timeout_seconds = 0\n", None, "[redis] replica_timeout_seconds = 0: must be at least 0.001"),
    ("wait_aof = \"yes\"\n", None, "[redis] wait_aof"),
])
def test_bad_replica_settings_are_configuration_errors(project, redis_table, url, message):
    project.write_config("[redis]\n" + redis_table + marker_tasks(project.root, ["a"]))
    env = {} if url is None else {"TRADEUL_MAINT_REDIS_URL": url}
    result = project.cli("run", "--date", DAY, **env)
    assert result.exit_code == 78, result.output
    [line] = result.stderr.strip().splitlines()
    assert message in line, line


def test_without_min_replicas_nothing_waits(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    r.config_resetstat()
    assert project.cli("run", "--date", DAY).exit_code == 0
    assert "cmdstat_wait" not in r.info("commandstats")


def test_a_write_refused_before_its_wait_is_exit_75_with_the_reason(project, tmp_path):
    """The URL names a replica: the lock's SET is refused (READONLY) in the pipeline that carries its WAIT."""
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    primary, primary_url = start_redis(tmp_path / "p", tcp=True)
    port = int(primary_url.rsplit(":", 1)[1].split("/")[0])
    replica, replica_url = start_redis(tmp_path / "r", "--replicaof", "127.0.0.1", str(port), tcp=True)
    try:
        project.write_config("[redis]\nmin_replicas = 1\n" + marker_tasks(project.root, ["a"]))
        result = project.cli("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=replica_url)
        assert result.exit_code == 75 and "read-only replica" in result.stderr, result.output
        assert count_runs(project.root, "a", "started") == []
    finally:
        for proc in (replica, primary):
            proc.terminate()
            proc.wait(10)


def test_a_redis_user_that_may_not_wait_is_a_configuration_error_and_the_lock_is_given_back(project, tmp_path):
    proc, url = start_redis(tmp_path)
    try:
        admin = redis.Redis.from_url(url)
        admin.execute_command("ACL", "SETUSER", "maint", "on", ">maint-pw", "~*", "+@all", "-wait")
        project.write_config("[redis]\nmin_replicas = 1\n" + marker_tasks(project.root, ["a"]))
        as_maint = url.replace("unix://", "unix://maint:maint-pw@")
        result = project.cli("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=as_maint)
        assert result.exit_code == 78, result.output
        assert "the Redis user may not run WAIT or WAITAOF" in result.stderr and "maint-pw" not in result.output
        assert admin.get("maintenance:lock") is None and count_runs(project.root, "a", "started") == []
        admin.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_slot_that_moved_under_a_write_is_temporary():
    """With min_replicas the writes go to the slot's primary directly, so a resharding's MOVED reaches the tool."""
    assert "MOVED" in refused(redis.exceptions.MovedError("3999 127.0.0.1:7001"))
