"""The built-in tasks against a real redis-server: what they delete, trim and save, and what they refuse at load."""

import dataclasses
import datetime as dt
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import redis
from loguru import logger
from redis.backoff import NoBackoff
from redis.retry import Retry

from conftest import start_redis
from tradeul_maint.config import builtin_params
from tradeul_maint.run import builtins
from tradeul_maint.run.tasks import TaskContext

SESSION = dt.date(2026, 11, 20)


@pytest.fixture
def client(redis_url):
    """A client like the tool's own: bytes replies."""
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def events():
    """The log events the task emitted, as (event, extra) pairs."""
    seen: list[tuple[str, dict]] = []
    handler = logger.add(lambda m: seen.append((m.record["message"], dict(m.record["extra"]))), level="DEBUG")
    yield seen
    logger.remove(handler)


def make_ctx(client, **params) -> TaskContext:
    return TaskContext(date=SESSION, task="t", run_id="test", redis=client,
                       logger=logger.bind(date=SESSION.isoformat(), task="t"), params=params)


def run_builtin(name: str, client, **params) -> tuple[dict, dict]:
    """Validate like the config loader does, run, and return (returned dict, reported counts)."""
    builtin_params.validate_builtin(name, params, "tasks.t")
    ctx = make_ctx(client, **params)
    returned = builtins.builtin_callable(name)(ctx)
    return returned, ctx.result


def test_every_declared_builtin_has_a_callable_and_every_callable_a_declaration():
    """The names live twice, their parameters (config) and what they do (run): the two lists must be the same."""
    assert set(builtin_params.BUILTINS) == set(builtins.REGISTRY)


@pytest.fixture
def persistent_redis():
    """A second redis-server of our own, with RDB save points on, in a short temporary directory."""
    directory = Path(tempfile.mkdtemp(prefix="tm-rdb-"))
    proc, url = start_redis(directory, "--save", "3600", "1")
    c = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))  # SHUTDOWN must not be retried
    yield c, url, directory
    try:
        c.shutdown(nosave=True)  # also stops a save child still running
    except redis.ConnectionError:
        pass
    proc.wait(10)
    c.close()
    shutil.rmtree(directory, ignore_errors=True)


# --- redis.delete_keys -------------------------------------------------------------------


def fill(client, prefix: str, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for start in range(0, count, 1000):
        pipe.mset({f"{prefix}{i}": i for i in range(start, min(count, start + 1000))})
    pipe.execute()


def test_delete_keys_removes_every_matching_key_and_logs_the_count_per_pattern(client, r, events):
    fill(client, "realtime:", 2500)
    fill(client, "snapshot:", 700)
    fill(client, "bars:", 300)
    returned, result = run_builtin("redis.delete_keys", client, patterns=["realtime:*", "snapshot:*"])
    assert returned == {"success": True}
    assert result == {"keys_deleted": 3200}
    assert r.dbsize() == 300 and r.exists("bars:0")
    per_pattern = {e["pattern"]: e["keys"] for name, e in events if name == "keys_deleted"}
    assert per_pattern == {"realtime:*": 2500, "snapshot:*": 700}


def test_delete_keys_dry_run_counts_and_deletes_nothing(client, r, events):
    fill(client, "realtime:", 1500)
    fill(client, "bars:", 10)
    _, result = run_builtin("redis.delete_keys", client, patterns=["realtime:*"], dry_run=True)
    assert result == {"keys_matched": 1500}
    assert r.dbsize() == 1510
    assert [(name, e["keys"], e["dry_run"]) for name, e in events if name.startswith("keys_")] == \
        [("keys_matched", 1500, True)]


@pytest.fixture
def command_log(client):
    """Every command the server runs, with its argument count, through SLOWLOG with a zero threshold."""
    before = client.config_get("slowlog-*")
    client.config_set("slowlog-max-len", 100_000)
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()

    def commands() -> list[tuple[str, int]]:
        """(command, number of arguments), oldest first; SLOWLOG keeps 31 and counts the rest."""
        out = []
        for entry in reversed(client.slowlog_get(100_000)):
            words = entry["command"].split()
            more = re.search(rb"\.\.\. \((\d+) more arguments\)$", entry["command"])
            out.append((words[0].decode().upper(), len(words) - 1 if not more else 31 - 1 + int(more[1])))
        return out

    yield commands
    for key, value in before.items():
        client.config_set(key, value)


def test_delete_keys_scans_never_keys_and_unlinks_in_bounded_batches(client, command_log):
    fill(client, "realtime:", 8000)
    fill(client, "bars:", 8000)
    client.slowlog_reset()
    _, result = run_builtin("redis.delete_keys", client, patterns=["realtime:*"])
    assert result == {"keys_deleted": 8000}
    commands = command_log()
    assert "KEYS" not in {name for name, _ in commands}
    assert sum(name == "SCAN" for name, _ in commands) >= 16000 // builtins.SCAN_COUNT
    unlinks = [args for name, args in commands if name == "UNLINK"]
    # One SCAN step's keys per UNLINK: memory is bounded by SCAN_COUNT, whatever the key count.
    assert sum(unlinks) == 8000 and len(unlinks) > 4 and max(unlinks) <= 2 * builtins.SCAN_COUNT


def test_delete_keys_acts_on_the_redis_named_by_url_and_closes_it(client, r, persistent_redis):
    other, url, _ = persistent_redis
    fill(other, "realtime:", 50)
    fill(client, "realtime:", 5)
    _, result = run_builtin("redis.delete_keys", client, patterns=["realtime:*"], url=url)
    assert result == {"keys_deleted": 50}
    assert other.dbsize() == 0 and r.dbsize() == 5
    assert len(other.client_list()) == 1  # only this test's own connection is left


# --- redis.trim_streams ------------------------------------------------------------------


def add_entries(client, stream: str, count: int, ids: list[str] | None = None) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(stream, {"i": i}, id=ids[i] if ids else "*")
    pipe.execute()


def test_trim_exact_maxlen_keeps_exactly_maxlen_entries(client, r, events):
    add_entries(client, "events:trades", 1000)
    _, result = run_builtin("redis.trim_streams", client, streams=["events:trades"], maxlen=10, approximate=False)
    assert r.xlen("events:trades") == 10
    assert result == {"streams_trimmed": 1, "entries_removed": 990}
    logged = [e for name, e in events if name == "streams_trimmed"]
    assert logged[0]["entries_removed"] == 990 and logged[0]["streams"] == ["events:trades"]


def test_trim_approximate_maxlen_is_the_default_and_removes_whole_nodes_only(client, r):
    add_entries(client, "events:trades", 1000)
    _, result = run_builtin("redis.trim_streams", client, streams=["events:trades"], maxlen=10)
    left = r.xlen("events:trades")
    assert 10 < left < 1000  # an exact trim would leave 10, none at all 1000
    assert result["entries_removed"] == 1000 - left


@pytest.fixture
def small_stream_nodes(client):
    """Nodes of 10 entries: an approximate XTRIM then stops after 1000 entries per call."""
    before = client.config_get("stream-node-max-entries")["stream-node-max-entries"]
    client.config_set("stream-node-max-entries", 10)
    yield
    client.config_set("stream-node-max-entries", before)


def test_trim_approximate_goes_on_past_the_servers_per_call_limit(client, r, small_stream_nodes):
    add_entries(client, "events:quotes", 5000)
    _, result = run_builtin("redis.trim_streams", client, streams=["events:quotes"], maxlen=5)
    assert r.xlen("events:quotes") <= 20
    assert result["entries_removed"] == 5000 - r.xlen("events:quotes")


def test_trim_by_pattern_touches_only_matching_streams(client, r, events):
    for name in ("events:a", "events:b", "other:c"):
        add_entries(client, name, 50)
    r.set("events:not-a-stream", "x")
    _, result = run_builtin("redis.trim_streams", client, patterns=["events:*"], maxlen=5, approximate=False)
    assert result == {"streams_trimmed": 2, "entries_removed": 90}
    assert (r.xlen("events:a"), r.xlen("events:b"), r.xlen("other:c")) == (5, 5, 50)
    assert r.get("events:not-a-stream") == "x"
    assert [(e["pattern"], e["entries_removed"]) for name, e in events if name == "streams_trimmed"] == \
        [("events:*", 90)]


def test_trim_named_and_pattern_streams_count_a_stream_once(client, r):
    add_entries(client, "events:a", 30)
    add_entries(client, "events:b", 30)
    _, result = run_builtin("redis.trim_streams", client, streams=["events:a"], patterns=["events:*"], maxlen=10,
                            approximate=False)
    assert result == {"streams_trimmed": 2, "entries_removed": 40}


@pytest.mark.parametrize("max_age", ["1h", "60m", 3600])
def test_trim_max_age_keeps_entries_newer_than_the_age_by_server_time(client, r, max_age):
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    ages_ms = [3 * 3600_000, 2 * 3600_000, 30 * 60_000, 60_000]
    ids = [f"{now_ms - age}-0" for age in ages_ms]
    add_entries(client, "events:orders", 4, ids)
    _, result = run_builtin("redis.trim_streams", client, streams=["events:orders"], max_age=max_age,
                            approximate=False)
    assert result == {"streams_trimmed": 1, "entries_removed": 2}
    assert [entry_id for entry_id, _ in r.xrange("events:orders")] == ids[2:]


def test_trim_reports_a_missing_named_stream_and_fails_on_a_key_of_another_type(client, r, events):
    returned, result = run_builtin("redis.trim_streams", client, streams=["events:gone"], maxlen=5)
    assert returned == {"success": True} and result == {"streams_trimmed": 0, "entries_removed": 0}
    assert ("stream_missing", "events:gone") in [(name, e.get("stream")) for name, e in events]
    r.set("events:string", "x")
    returned, _ = run_builtin("redis.trim_streams", client, streams=["events:string"], maxlen=5)
    assert returned == {"success": False, "error": "params.streams: events:string is a string, not a stream"}


# --- redis.bgsave ------------------------------------------------------------------------


def test_bgsave_skips_cleanly_when_persistence_is_disabled(client, events):
    before = client.lastsave()
    returned, result = run_builtin("redis.bgsave", client)
    assert returned["success"] is True and returned["note"].startswith("skipped: persistence is disabled")
    assert result == {}
    assert client.info("persistence")["rdb_bgsave_in_progress"] == 0 and client.lastsave() == before
    assert "snapshot_skipped" in [name for name, _ in events]


def test_bgsave_with_persistence_on_waits_for_the_snapshot(client, persistent_redis):
    other, url, directory = persistent_redis
    other.set("k", "v")
    returned, result = run_builtin("redis.bgsave", client, url=url)
    assert returned == {"success": True}
    assert result["waited_for_running_save"] is False
    info = other.info("persistence")
    assert info["rdb_bgsave_in_progress"] == 0 and info["rdb_last_bgsave_status"] == "ok"
    assert info["rdb_changes_since_last_save"] == 0
    assert (directory / "dump.rdb").is_file()
    assert dt.datetime.fromisoformat(result["saved_at"]).timestamp() == info["rdb_last_save_time"]


def test_bgsave_waits_for_a_save_already_in_progress_then_takes_its_own(client, persistent_redis, events):
    other, url, _ = persistent_redis
    other.mset({"a": 1, "b": 2, "c": 3})
    other.config_set("rdb-key-save-delay", 100_000)  # 0.1 s per key: the running save takes 0.3 s
    other.bgsave(schedule=False)
    other.config_set("rdb-key-save-delay", 0)  # for the saves forked from now on
    other.set("written-after-that-save-forked", 1)
    returned, result = run_builtin("redis.bgsave", client, url=url)
    assert returned == {"success": True} and result["waited_for_running_save"] is True
    assert other.info("persistence")["rdb_changes_since_last_save"] == 0  # our save came after the write
    assert "snapshot_waiting_for_running_save" in [name for name, _ in events]


def test_bgsave_fails_after_its_timeout(client, persistent_redis):
    other, url, _ = persistent_redis
    other.mset({"a": 1, "b": 2, "c": 3})
    other.config_set("rdb-key-save-delay", 1_000_000)
    started = time.monotonic()
    returned, _ = run_builtin("redis.bgsave", client, url=url, timeout=0.3)
    assert time.monotonic() - started < 2
    assert returned["success"] is False and returned["error"].startswith("BGSAVE did not finish within 0.3s")


def test_bgsave_fails_when_the_server_cannot_write_the_snapshot(client, persistent_redis):
    other, url, directory = persistent_redis
    (directory / "blocked.rdb").mkdir()  # renaming the finished temp file onto a directory fails
    other.config_set("dbfilename", "blocked.rdb")
    other.set("k", "v")
    returned, _ = run_builtin("redis.bgsave", client, url=url)
    assert returned["success"] is False and "rdb_last_bgsave_status:err" in returned["error"]


# --- through the command line --------------------------------------------------------------


def test_builtin_counts_land_in_the_status_document(project, r):
    add_entries(r, "events:a", 100)
    r.mset({"realtime:1": 1, "realtime:2": 2})
    project.write_config("""
        [[tasks]]
        name = "trim"
        builtin = "redis.trim_streams"
        params = { patterns = ["events:*"], maxlen = 10, approximate = false }

        [[tasks]]
        name = "reset"
        builtin = "redis.delete_keys"
        params = { patterns = ["realtime:*"] }
    """)
    result = project.cli("run", "--date", SESSION.isoformat(), "--now", "2026-11-21T12:00")
    assert result.exit_code == 0, result.output
    doc = json.loads(r.get(f"maintenance:status:{SESSION}"))
    assert doc["task_details"]["trim"]["result"] == {"streams_trimmed": 1, "entries_removed": 90}
    assert doc["task_details"]["reset"]["result"] == {"keys_deleted": 2}


BAD_PARAMS = [
    ("redis.delete_keys", '{ patterns = ["a:*"], dryrun = true }', "params.dryrun: unknown parameter"),
    ("redis.delete_keys", "{ dry_run = true }", "needs params.patterns"),
    ("redis.delete_keys", "{ patterns = [] }", "params.patterns must be a non-empty list"),
    ("redis.delete_keys", '{ patterns = ["a:*"], dry_run = "yes" }', "params.dry_run = 'yes': expected true or false"),
    ("redis.delete_keys", '{ patterns = ["a:*"], url = "http://app:secret@cache:6379" }',
     "params.url: Redis URL 'http://app:***@cache:6379': expected redis://"),
    ("redis.delete_keys", '{ patterns = ["a:*"], url = "redis://:pa/ss@cache:6379/0" }',
     "params.url: Redis URL 'redis://***@cache:6379/0' does not parse as written: percent-encode"),
    ("redis.trim_streams", '{ streams = ["s"], maxlen = 10, max_len = 5 }', "params.max_len: unknown parameter"),
    ("redis.trim_streams", "{ maxlen = 10 }", "needs params.streams or params.patterns"),
    ("redis.trim_streams", '{ streams = ["s"] }', "exactly one of params.maxlen"),
    ("redis.trim_streams", '{ streams = ["s"], maxlen = 10, max_age = "1h" }', "exactly one of params.maxlen"),
    ("redis.trim_streams", '{ streams = ["s"], max_age = "2 weeks" }', "params.max_age = '2 weeks'"),
    ("redis.trim_streams", '{ streams = ["s"], maxlen = -1 }', "params.maxlen = -1: must be 0 or more"),
    ("redis.trim_streams", '{ streams = ["s"], maxlen = 10, approximate = 1 }', "params.approximate = 1"),
    ("redis.bgsave", '{ wait = "10m" }', "params.wait: unknown parameter for redis.bgsave"),
    ("redis.bgsave", '{ timeout = "soon" }', "params.timeout = 'soon'"),
    ("redis.vacuum", "{}", "unknown built-in"),
]


@pytest.mark.parametrize("builtin, params, message", BAD_PARAMS)
def test_bad_builtin_params_are_a_config_error_on_one_line(project, builtin, params, message):
    project.write_config(f"""
        [[tasks]]
        name = "maint"
        builtin = "{builtin}"
        params = {params}
    """)
    result = project.cli("run", "--date", SESSION.isoformat(), "--now", "2026-11-21T12:00")
    assert result.exit_code == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "[tasks.maint]" in lines[0] and message in lines[0], result.stderr
    assert "secret" not in result.output


# --- the tool's own keys are never deleted ---------------------------------------------------

OWN_KEY_PATTERNS = ["maintenance\\:status:*", "[^x]aintenance:status:*", "maintenance:status:2026-1*",
                    "*:executed:*", "m*", "?aintenance:*", "*", "maint[a-z]nance:lock", "[l-n]aintenance:*",
                    "maintenance[:]*", "[\\m]aintenance:*", "*[^]", "mainte?ance?last_run"]
OTHER_PATTERNS = ["realtime:*", "maintenance", "maintenanceX:*", "[^m]*", "maintenance:[]*", "?", "maint",
                  "x*maintenance:*", "[abc]aintenance:*", "[^m-m]aintenance:*"]


@pytest.mark.parametrize("pattern", OWN_KEY_PATTERNS)
def test_a_delete_pattern_that_can_match_the_tools_keys_is_refused_at_load(project, pattern):
    project.write_config(f"""
        [[tasks]]
        name = "reset"
        builtin = "redis.delete_keys"
        params = {{ patterns = [{json.dumps(pattern)}] }}
    """)
    result = project.cli("run", "--date", SESSION.isoformat(), "--now", "2026-11-21T12:00")
    assert result.exit_code == 78, result.output
    [line] = result.stderr.strip().splitlines()
    assert f"params.patterns: {pattern!r} would delete this tool's own state" in line


@pytest.mark.parametrize("pattern", OTHER_PATTERNS)
def test_a_delete_pattern_that_cannot_match_the_tools_keys_is_accepted(pattern):
    from tradeul_maint.redisio.redisglob import can_match_key_starting_with

    assert not can_match_key_starting_with(pattern, "maintenance:")


def test_the_load_time_check_follows_a_hash_tagged_prefix():
    from tradeul_maint.redisio.redisglob import can_match_key_starting_with

    assert can_match_key_starting_with("{maintenance}:*", "{maintenance}:")
    assert can_match_key_starting_with("\\{m*", "{maintenance}:")
    assert not can_match_key_starting_with("maintenance:*", "{maintenance}:")


def test_the_glob_reader_agrees_with_the_servers_scan_match(r):
    """Random patterns over the special characters, each checked against what SCAN MATCH returns."""
    import random

    from tradeul_maint.redisio.redisglob import matches

    rng = random.Random(20261120)
    keys = {"".join(rng.choice("ab:-]^\\[*?") for _ in range(rng.randint(1, 5))) for _ in range(400)}
    r.mset({k: 1 for k in keys})
    for _ in range(300):
        pattern = "".join(rng.choice("ab:*?[]^-\\") for _ in range(rng.randint(1, 7)))
        found = set(r.scan_iter(match=pattern, count=1000))
        assert {k for k in keys if matches(pattern, k)} == found, pattern


def test_delete_keys_never_unlinks_a_key_under_the_prefix_whatever_the_pattern(client, r, events):
    fill(client, "realtime:", 1500)
    r.mset({"maintenance:status:2026-11-19": "{}", "maintenance:lock": "x", "maintenance:last_run": "2026-11-19"})
    r.mset({"custom:status:2026-11-19": "{}"})
    ctx = make_ctx(client, patterns=["*"])
    builtins.delete_keys(ctx)
    assert ctx.result == {"keys_deleted": 1501}  # the realtime keys and custom:status (not the tool's here)
    assert sorted(r.keys()) == ["maintenance:last_run", "maintenance:lock", "maintenance:status:2026-11-19"]
    spared = [e for name, e in events if name == "own_keys_spared"]
    assert [(e["pattern"], e["keys"], e["prefix"]) for e in spared] == [("*", 3, "maintenance:")]
    ctx = make_ctx(client, patterns=["*"], dry_run=True)
    builtins.delete_keys(ctx)
    assert ctx.result == {"keys_matched": 0}


def test_delete_keys_spares_the_prefix_the_context_names(client, r):
    r.mset({"custom:status:2026-11-19": "{}", "custom:lock": "x", "maintenance:lock": "y"})
    ctx = make_ctx(client, patterns=["*"])
    ctx = dataclasses.replace(ctx, key_prefix="custom")
    builtins.delete_keys(ctx)
    assert sorted(r.keys()) == ["custom:lock", "custom:status:2026-11-19"]


def test_a_delete_on_the_same_server_through_url_leaves_the_state_alone(project, r, redis_url):
    """The load-time check does not look at tasks with params.url; the run-time filter still holds."""
    done = json.dumps({"date": "2026-11-19", "started_at": "2026-11-19T22:00:00+00:00",
                       "completed_at": "2026-11-19T22:01:00+00:00", "duration_seconds": 60.0,
                       "all_success": True, "tasks": {"reset": "completed"}})
    r.set("maintenance:status:2026-11-19", done)
    r.set("maintenance:executed:2026-11-19", "1")
    r.mset({"realtime:1": 1, "realtime:2": 2})
    project.write_config(f"""
        [[tasks]]
        name = "reset"
        builtin = "redis.delete_keys"
        params = {{ patterns = ["*", "maintenance:*", "[m]aintenance\\\\:status:*"], url = "{redis_url}" }}

        [[tasks]]
        name = "after"
        command = ["true"]
        after = ["reset"]
    """)
    result = project.cli("run", "--date", SESSION.isoformat(), "--now", "2026-11-21T12:00")
    assert result.exit_code == 0, result.output
    assert r.get("maintenance:status:2026-11-19") == done and r.get("maintenance:executed:2026-11-19") == "1"
    assert r.exists("realtime:1", "realtime:2") == 0
    doc = json.loads(r.get(f"maintenance:status:{SESSION}"))
    assert doc["all_success"] is True and doc["task_details"]["reset"]["result"] == {"keys_deleted": 2}
    status = project.cli("status", "--date", "2026-11-19", "--now", "2026-11-21T12:00")
    assert status.exit_code == 0 and "done" in status.stdout
    logged = [json.loads(line) for line in (project.log_dir / "maintenance.log").read_text().splitlines()]
    assert [e["pattern"] for e in logged if e["event"] == "own_keys_spared"] == \
        ["*", "maintenance:*", "[m]aintenance\\:status:*"]
