"""No command crashes on what it finds in Redis: misshapen documents, keys of another type, a lock the
tool did not write, a server that refuses writes. And no command takes a time it cannot represent.

Issue 10, cases 6 to 9, 11 and 15, each through the CLI against a real redis-server.
"""

from __future__ import annotations

import json

import pytest
import redis

from conftest import count_runs, marker_tasks, start_redis, wait_for

DAY = "2026-11-25"
NOW = "2026-11-27T12:00"  # the 25th's window has passed; the market is open, so cron waits
AFTER_CLOSE = "2026-11-27T16:30"  # the market is closed: cron catches up
QUIET = "[schedule]\nauto_recover = false\n"


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def keyspace(r) -> dict:
    """Every key with its type, value and whether it expires: to prove a command changed nothing."""
    dump = {}
    for key in sorted(r.keys("*")):
        kind = r.type(key)
        value = {"string": r.get, "hash": r.hgetall, "list": lambda k: r.lrange(k, 0, -1)}[kind](key)
        dump[key] = (kind, value, r.ttl(key) > 0)
    return dump


# --- case 6: valid JSON of the wrong shape is `corrupt`, never a crash ------------------------------

MISSHAPEN = [
    '{"date": "D", "task_details": [1]}',
    '{"date": "D", "task_details": "nothing"}',
    '{"date": "D", "tasks": {"a": "completed"}, "task_details": {"a": {"output": ["a"]}}}',
    '{"date": "D", "tasks": {"a": "completed"}, "all_success": true, "completed_at": "2026-11-25T22:10:00",'
    ' "duration_seconds": "slow"}',
    '{"date": "D", "tasks": ["a"]}',
    '{"date": "D", "tasks": {"a": 1}}',
    '{"date": "D", "started_at": "yesterday"}',
    '{"date": "D", "all_success": "yes", "completed_at": "2026-11-25T22:10:00"}',
    '{"date": "D", "attempts": "many"}',
    '[]',
    '"done"',
]


@pytest.mark.parametrize("document", MISSHAPEN)
def test_a_misshapen_status_document_is_corrupt_in_every_command_and_run_again(project, r, document):
    project.write_config(marker_tasks(project.root, ["a"]))
    r.set(f"maintenance:status:{DAY}", document.replace('"D"', f'"{DAY}"'))
    for args in (["status"], ["status", "--json"], ["status", "--date", DAY], ["status", "--date", DAY, "--json"],
                 ["status", "--check"], ["run", "--dry-run"], ["recover", "--dry-run"]):
        result = project.cli(*args, "--now", NOW)
        assert result.exit_code in (0, 1), (args, result.output)
        assert "Traceback" not in result.output and "unexpected error" not in result.output, args
    table = project.cli("status", "--date", DAY, "--now", NOW).stdout
    assert f"{DAY}: corrupt" in table
    data = json.loads(project.cli("status", "--json", "--now", NOW).stdout)
    assert {s["date"]: s["state"] for s in data["sessions"]}[DAY] == "corrupt" and DAY in data["not_done"]
    # Not done: cron catches it up once the market is closed, and the rewrite makes it whole again.
    result = project.cli("run", "--now", AFTER_CLOSE)
    assert result.exit_code == 0, result.output
    assert DAY in count_runs(project.root, "a", "started")
    assert json.loads(r.get(f"maintenance:status:{DAY}"))["all_success"] is True


def test_a_misshapen_task_list_makes_the_session_corrupt(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    r.set(f"maintenance:status:{DAY}", json.dumps({"date": DAY, "started_at": "2026-11-25T22:00:00+00:00",
                                                   "tasks": {"a": "in_progress"}, "task_list": {"a": 7}}))
    result = project.cli("status", "--date", DAY, "--now", NOW)
    assert result.exit_code == 0 and f"{DAY}: corrupt" in result.stdout and "task_list.a is 7" in result.stdout
    assert project.cli("run", "--date", DAY, "--now", NOW).exit_code == 0


# --- case 7: a key of another type is exit 78 naming the key, and nothing is written -----------------

@pytest.mark.parametrize("key, make", [
    ("maintenance:lock", lambda r, k: r.hset(k, "owner", "other-app")),
    ("maintenance:last_run", lambda r, k: r.hset(k, "date", "x")),
    (f"maintenance:executed:{DAY}", lambda r, k: r.rpush(k, "x")),
    (f"maintenance:status:{DAY}", lambda r, k: r.hset(k, "date", DAY)),
])
def test_a_key_of_another_type_is_a_configuration_error_naming_it_and_nothing_is_written(project, r, key, make):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    make(r, key)
    before = keyspace(r)
    for args in (["run", "--date", DAY], ["recover", "--since", DAY, "--until", DAY]):
        result = project.cli(*args, "--now", NOW)
        assert result.exit_code == 78, (args, result.output)
        line = one_line(result.stderr)
        assert key in line and "key_prefix" in line, line
        assert keyspace(r) == before, args
    assert count_runs(project.root, "a", "started") == []  # refused before any task ran


@pytest.mark.parametrize("key, make", [
    ("maintenance:lock", lambda r, k: r.hset(k, "owner", "other-app")),
    ("maintenance:last_run", lambda r, k: r.hset(k, "date", "x")),
])
def test_status_names_a_key_of_another_type(project, r, key, make):
    project.write_config(marker_tasks(project.root, ["a"]))
    make(r, key)
    for args in (["status"], ["status", "--json"], ["status", "--check"], ["status", "--date", DAY]):
        result = project.cli(*args, "--now", NOW)
        assert result.exit_code == 78, (args, result.output)
        assert key in one_line(result.stderr)


# --- case 8: a lock the tool did not write is reported, never waited on silently -----------------------

@pytest.mark.parametrize("value, expiry", [("junk", None), ("junk", 60_000),
                                           (json.dumps({"host": "h", "pid": 1, "since": "s", "run_id": "r",
                                                        "nonce": "n"}), None)])
def test_a_lock_the_tool_did_not_write_makes_cron_say_so_and_exit_75(project, r, value, expiry):
    project.write_config(marker_tasks(project.root, ["a"]))
    r.set("maintenance:lock", value, px=expiry)
    result = project.cli("run", "--now", AFTER_CLOSE)  # sessions to catch up: it needs the lock
    assert result.exit_code == 75, result.output
    line = one_line(result.stderr)
    assert "maintenance:lock" in line and "DEL" in line
    assert count_runs(project.root, "a", "started") == []
    status = project.cli("status", "--now", AFTER_CLOSE)
    assert "lock: the run lock holds" in status.stdout
    check = project.cli("status", "--check", "--now", AFTER_CLOSE)
    assert check.exit_code == 1 and "the run lock holds" in check.stdout
    assert r.get("maintenance:lock") == value  # reported, not removed


def test_a_cron_tick_with_nothing_to_do_ignores_a_foreign_lock(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    r.set("maintenance:lock", "junk")
    result = project.run("-q", "run", "--now", "2026-11-30T12:00")  # market open: catch-up waits, nothing due
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# --- case 9: a server that refuses writes is temporary (75), and the state stays resumable --------------

@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own: these trials change the server's role and limits."""
    (tmp_path / "own").mkdir()
    proc, url = start_redis(tmp_path / "own", tcp=True)
    yield url
    proc.kill()
    proc.wait(10)


@pytest.mark.parametrize("refusal, setup, undo", [
    ("read-only replica", lambda c: c.replicaof("127.0.0.1", 1), lambda c: c.replicaof("no", "one")),
    ("out of memory", lambda c: c.config_set("maxmemory", 1), lambda c: c.config_set("maxmemory", 0)),
    ("not enough replicas", lambda c: c.config_set("min-replicas-to-write", 1),
     lambda c: c.config_set("min-replicas-to-write", 0)),
])
def test_redis_refusing_writes_at_the_start_is_exit_75_with_one_line(project, own_redis, refusal, setup, undo):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    client = redis.Redis.from_url(own_redis)
    setup(client)
    result = project.cli("run", "--date", DAY, "--now", NOW, TRADEUL_MAINT_REDIS_URL=own_redis)
    assert result.exit_code == 75, result.output
    assert refusal in one_line(result.stderr)
    undo(client)
    assert project.cli("run", "--date", DAY, "--now", NOW, TRADEUL_MAINT_REDIS_URL=own_redis).exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("refusal, flip, undo", [
    ("read-only replica", "c.replicaof('127.0.0.1', 1)", lambda c: c.replicaof("no", "one")),
    ("out of memory", "c.config_set('maxmemory', 1)", lambda c: c.config_set("maxmemory", 0)),
])
def test_redis_refusing_writes_mid_cycle_is_exit_75_and_the_next_run_resumes(project, own_redis, refusal, flip,
                                                                             undo):
    # Flips the server once: the task itself is in progress when the refusal comes, so it runs again.
    (project.root / "flip.py").write_text(f"import os\n\ndef run(ctx):\n    c = ctx.redis\n"
                                          f"    if not os.path.exists({str(project.root / 'flipped')!r}):\n"
                                          f"        open({str(project.root / 'flipped')!r}, 'w').close()\n"
                                          f"        {flip}\n")
    project.write_config(QUIET + "[redis]\nlock_lease_seconds = 2\n" + marker_tasks(project.root, ["a"])
                         + '[[tasks]]\nname = "flip"\npython = "flip:run"\nafter = ["a"]\n'
                         + marker_tasks(project.root, ["b"], deps={"b": ["flip"]}))
    result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=own_redis)
    assert result.returncode == 75, result.stderr
    assert refusal in result.stderr.strip().splitlines()[-1]
    assert count_runs(project.root, "b", "started") == []
    client = redis.Redis.from_url(own_redis)
    undo(client)
    assert client.get(f"maintenance:executed:{DAY}") is None
    # Resumable: once the stopped runner's lease has run out, `a` (completed) is not run again; the rest runs.
    assert wait_for(lambda: client.get("maintenance:lock") is None, 10)
    again = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=own_redis)
    assert again.returncode == 0, again.stderr
    assert count_runs(project.root, "a", "started") == [DAY] and count_runs(project.root, "b") == [DAY]


# --- case 11: a time the tool cannot represent is bad usage -----------------------------------------------

@pytest.mark.parametrize("command", [["status"], ["run"], ["recover", "--dry-run"], ["run", "--dry-run"]])
@pytest.mark.parametrize("now", ["9999-12-31T23:59", "", "  ", "next tuesday"])
def test_an_unusable_now_is_exit_2_with_one_line(project, r, command, now):
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.cli(*command, "--now", now)
    assert result.exit_code == 2, result.output
    assert "--now" in one_line(result.stderr)


def test_an_unusable_now_in_the_environment_names_the_variable(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.run("status", TRADEUL_MAINT_NOW="9999-12-31T23:59")
    assert result.returncode == 2
    assert "TRADEUL_MAINT_NOW" in one_line(result.stderr) or "--now" in one_line(result.stderr)


# --- case 15: the session whose window is open now is always in view -----------------------------------

def test_a_window_after_midnight_is_run_with_a_lookback_of_one(project, r):
    project.write_config('[schedule]\nwindow_start = "close+9h"\nlookback_sessions = 1\n'
                         + marker_tasks(project.root, ["a"]))
    # Tuesday 2026-11-24 closes at 16:00: its window is Wednesday 01:00-01:30.
    dry = project.cli("run", "--dry-run", "--now", "2026-11-25T01:05")
    assert "would run 2026-11-24 (inside its window" in dry.stdout, dry.stdout
    check = project.cli("status", "--check", "--now", "2026-11-25T01:35")
    assert check.exit_code == 1 and "2026-11-24 missing" in check.stdout
    assert project.cli("run", "--now", "2026-11-25T01:05").exit_code == 0
    assert count_runs(project.root, "a") == ["2026-11-24"]
    assert project.cli("status", "--check", "--now", "2026-11-25T01:35").exit_code == 0
