"""`tradeul-maint check`: the preflight, one line per check, exit 0 only when every check passes.

Each failure a run would meet at 17:00 is produced for real: a Redis that refuses the
password, a user that may not write, a key of another type, a module that does not
import, a program that is not there or not executable, a log directory that cannot be
created, a calendar about to end. `run --dry-run` reports a task that does not import,
and the cron tick with nothing to do imports no task module at all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import redis

from conftest import start_redis

from tradeul_maint.run import containment

NOON = "2026-11-30T12:00"  # a Monday before its window
GOOD_TASKS = f"""
[[tasks]]
name = "load"
command = ["{sys.executable}", "-c", "pass"]

[[tasks]]
name = "compute"
python = "checkjobs:compute"
after = ["load"]

[[tasks]]
name = "clear"
builtin = "redis.delete_keys"
params = {{ patterns = ["realtime:*"] }}
market_closed_only = true
"""


def write_jobs(project, text: str = "def compute(ctx):\n    return None\n") -> None:
    (project.root / "checkjobs.py").write_text(text)


def lines_of(output: str) -> dict[str, str]:
    """check's lines by check name: '✓ ok' or '✗ FAIL' and the detail."""
    found = {}
    for line in output.splitlines()[1:-1]:
        mark, _, rest = line.partition(" ")
        word, _, rest = rest.lstrip().partition(" ")
        name, _, detail = rest.lstrip().partition(": ")
        found[name] = f"{mark} {word}: {detail}"
    return found


@pytest.fixture
def good(project):
    write_jobs(project)
    project.write_config(GOOD_TASKS)
    return project


def test_everything_in_order_passes_with_one_line_each(good, r):
    r.set("maintenance:last_run", "2026-11-27")
    r.set("realtime:quote", "x")
    before = {key: r.dump(key) for key in r.keys("*")}
    result = good.cli("check", "--now", NOON)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"tradeul-maint check: config {good.config}, Redis {good.redis_url}"
    checks = lines_of(result.stdout)
    assert list(checks) == ["config", "redis", "redis write", "key types", "replicas", "eviction", "task list",
                            "deadline", "task load", "task compute", "task clear", "plan", "log dir", "calendar",
                            "next window", "containment"]
    assert all(line.startswith("✓ ok:") for line in checks.values()), result.stdout
    assert lines[-1] == "all 16 checks passed"
    assert checks["replicas"] == ("✓ ok: the primary sees no replica; min_replicas = 0: writes do not wait for "
                                  "replicas (a failover can lose the last ones)")
    assert checks["eviction"].startswith("✓ ok: no maxmemory: nothing is evicted")
    assert checks["task compute"] == "✓ ok: python checkjobs:compute: imports, callable"
    assert checks["task load"] == f"✓ ok: command {sys.executable}: executable"
    assert checks["log dir"] == f"✓ ok: {good.log_dir}: writable"
    assert checks["next window"].startswith("✓ ok: session 2026-11-30: 2026-11-30 17:00-17:30 America/New_York "
                                            "(22:00-22:30 UTC), opens in 5h00m")
    assert checks["redis write"].startswith("✓ ok: wrote and deleted maintenance:check:")
    # The test write is gone and no key of the tool's or of anyone else's was touched.
    assert {key: r.dump(key) for key in r.keys("*")} == before


def test_the_containment_in_force_is_named(good, r):
    """A cgroup of each attempt's own where this host delegates one, else a subreaper per attempt (or on demand)."""
    expected = containment.detect().describe()
    assert lines_of(good.cli("check", "--now", NOON).stdout)["containment"] == f"✓ ok: {expected}"
    good.config.write_text(good.config.read_text().replace("[run]\n", '[run]\ncontainment = "subreaper"\n')
                           if "[run]\n" in good.config.read_text() else
                           '[run]\ncontainment = "subreaper"\n' + good.config.read_text())
    line = lines_of(good.cli("check", "--now", NOON).stdout)["containment"]
    assert line == '✓ ok: a subreaper per attempt, no cgroup ([run] containment = "subreaper")'


def test_json_has_the_same_checks(good, r):
    result = good.cli("check", "--json", "--now", NOON)
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert (doc["ok"], doc["config"], doc["redis"]) == (True, str(good.config), good.redis_url)
    assert [c["name"] for c in doc["checks"]][:4] == ["config", "redis", "redis write", "key types"]
    assert all(c["ok"] is True and c["detail"] for c in doc["checks"])


def test_the_redis_password_is_hidden_and_a_wrong_one_fails_the_redis_check(good, tmp_path):
    (tmp_path / "auth").mkdir()
    proc, url = start_redis(tmp_path / "auth", "--requirepass", "s3cret-pw", tcp=True)
    try:
        host = url.removeprefix("redis://")
        ok = good.cli("check", "--now", NOON, TRADEUL_MAINT_REDIS_URL=f"redis://:s3cret-pw@{host}")
        assert ok.exit_code == 0, ok.output
        assert f"Redis redis://:***@{host}" in ok.stdout.splitlines()[0]
        bad = good.cli("check", "--now", NOON, TRADEUL_MAINT_REDIS_URL=f"redis://:wrong-pw@{host}")
        assert bad.exit_code == 1
        checks = lines_of(bad.stdout)
        assert checks["redis"].startswith("✗ FAIL: Redis at redis://:***@") and "rejected the credentials" in \
            checks["redis"]
        assert checks["redis write"] == "✗ FAIL: not checked: no connection to Redis"
        assert "s3cret" not in ok.output + bad.output and "wrong-pw" not in bad.output
        assert bad.stdout.splitlines()[-1] == ("7 of 16 checks failed: redis, redis write, key types, replicas, "
                                                  "eviction, task list, deadline")
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_user_that_may_only_read_fails_the_write_check(good, tmp_path):
    (tmp_path / "acl").mkdir()
    proc, url = start_redis(tmp_path / "acl", tcp=True)
    try:
        admin = redis.Redis.from_url(url)
        admin.execute_command("ACL", "SETUSER", "reader", "on", ">read-pw", "~*", "+@read", "+@connection")
        host = url.removeprefix("redis://")
        result = good.cli("check", "--now", NOON, TRADEUL_MAINT_REDIS_URL=f"redis://reader:read-pw@{host}")
        assert result.exit_code == 1
        checks = lines_of(result.stdout)
        assert checks["redis"].startswith("✓ ok")
        assert checks["redis write"].startswith("✗ FAIL: SET maintenance:check:")
        assert "failed: NoPermissionError: this user has no permissions to run the 'set' command" in \
            checks["redis write"]
        assert admin.dbsize() == 0
    finally:
        proc.terminate()
        proc.wait(10)


def test_unreachable_redis_is_a_failed_check_not_exit_75(good, tmp_path):
    result = good.cli("check", "--now", NOON, TRADEUL_MAINT_REDIS_URL=f"unix://{tmp_path}/nothing.sock")
    assert result.exit_code == 1
    assert lines_of(result.stdout)["redis"].startswith("✗ FAIL: Redis at unix://") and "unreachable" in result.stdout


def test_a_key_of_another_type_under_the_prefix_is_named(good, r):
    r.rpush("maintenance:executed:2026-11-25", "someone else's list")
    result = good.cli("check", "--now", NOON)
    assert result.exit_code == 1
    assert lines_of(result.stdout)["key types"].startswith(
        "✗ FAIL: Redis key maintenance:executed:2026-11-25 is a list, not the string")


def test_tasks_that_would_fail_to_start(project, tmp_path):
    write_jobs(project, "compute = 42\n")
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\n")
    project.write_config(f"""
        [[tasks]]
        name = "missing-module"
        python = "nowhere.jobs:compute"
        [[tasks]]
        name = "not-callable"
        python = "checkjobs:compute"
        [[tasks]]
        name = "missing-attr"
        python = "checkjobs:other"
        [[tasks]]
        name = "no-program"
        command = ["no-such-program-xyz", "--date", "{{date}}"]
        [[tasks]]
        name = "no-x-bit"
        command = ["{script}"]
        [[tasks]]
        name = "relative"
        command = ["bin/job"]
        """)
    result = project.cli("check", "--now", NOON)
    assert result.exit_code == 1
    checks = lines_of(result.stdout)
    assert checks["task missing-module"].startswith(
        "✗ FAIL: python nowhere.jobs:compute: ModuleNotFoundError: No module named 'nowhere' (searched "
        f"{project.root} first: set [run] pythonpath)")
    assert checks["task not-callable"] == "✗ FAIL: python checkjobs:compute is a int, not a callable"
    assert checks["task missing-attr"] == "✗ FAIL: python checkjobs:other: module checkjobs has no attribute 'other'"
    assert checks["task no-program"].startswith("✗ FAIL: command no-such-program-xyz: not found on PATH")
    assert checks["task no-x-bit"].startswith(f"✗ FAIL: command {script}: not executable")
    assert checks["task relative"].startswith("✗ FAIL: command bin/job: a relative path depends on the working")
    assert result.stdout.splitlines()[-1].startswith("6 of 19 checks failed: task missing-module, ")


def test_log_dir_fallback_is_reported_and_no_writable_dir_fails(good, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    fallback = good.cli("check", "--now", NOON, TRADEUL_MAINT_LOG_DIR=str(blocker / "logs"))
    assert fallback.exit_code == 0
    assert lines_of(fallback.stdout)["log dir"] == (f"✓ ok: {blocker / 'logs'} is not writable (Not a directory): "
                                                   f"logs go to the fallback {good.state_dir / 'logs'}")
    neither = good.cli("check", "--now", NOON, TRADEUL_MAINT_LOG_DIR=str(blocker / "logs"),
                       TRADEUL_MAINT_STATE_DIR=str(blocker / "state"))
    assert neither.exit_code == 1
    assert lines_of(neither.stdout)["log dir"].startswith(f"✗ FAIL: cannot write logs to {blocker / 'logs'}")


def test_a_calendar_that_ends_within_the_warning_fails(project):
    write_jobs(project)
    project.write_config(GOOD_TASKS + "\n[calendar]\nexpiry_warning_days = 800\n")
    result = project.cli("check", "--now", NOON)
    assert result.exit_code == 1
    assert lines_of(result.stdout)["calendar"].startswith("✗ FAIL: the XNYS calendar of exchange-calendars ")
    assert "upgrade exchange-calendars" in result.stdout


def test_a_prebuilt_calendar_cache_that_is_not_used_fails(good, tmp_path):
    used = good.run("calendar", "--write-cache", str(tmp_path / "image"))
    assert used.returncode == 0
    ok = good.cli("check", "--now", NOON, TRADEUL_MAINT_CALENDAR_CACHE=str(tmp_path / "image"))
    assert lines_of(ok.stdout)["calendar"].endswith(f"read from {next((tmp_path / 'image').iterdir())}")
    stale = good.cli("check", "--now", NOON, TRADEUL_MAINT_CALENDAR_CACHE=str(tmp_path / "empty"))
    assert stale.exit_code == 1
    assert lines_of(stale.stdout)["calendar"].startswith(f"✗ FAIL: the prebuilt cache in {tmp_path / 'empty'}")


def test_a_calendar_cache_that_cannot_be_written_fails(good):
    """A state directory the cache cannot be written to (a read-only mount, a full disk) makes every tick
    build the calendar again: silent for the tick, said by check."""
    shutil.rmtree(good.state_dir / "cache")
    (good.state_dir / "cache").write_text("a file where the cache directory should be")
    result = good.cli("check", "--now", NOON)
    assert result.exit_code == 1
    assert lines_of(result.stdout)["calendar"].startswith(
        f"✗ FAIL: cannot write the calendar cache {good.state_dir / 'cache'}/calendar-XNYS-")
    assert "TRADEUL_MAINT_CALENDAR_CACHE" in result.stdout


def test_a_configuration_that_does_not_load_is_exit_78_with_its_one_line(project):
    project.write_config('[schedule]\nwindow_minutes = "thirty"\n[[tasks]]\nname = "a"\ncommand = ["true"]\n')
    result = project.cli("check", "--now", NOON)
    assert result.exit_code == 78
    assert result.stdout.splitlines()[1] == (f"✗ FAIL config: config error in {project.config}: [schedule] "
                                             "window_minutes = 'thirty': expected an integer")
    as_json = project.cli("check", "--json")
    assert as_json.exit_code == 78 and json.loads(as_json.stdout)["ok"] is False


def test_bad_now_is_a_usage_error(good):
    result = good.cli("check", "--now", "tomorrow")
    assert result.exit_code == 2 and "--now 'tomorrow'" in result.stderr


# --- run --dry-run and the tick ------------------------------------------------------------------

IMPORT_MARKER = """\
import pathlib
pathlib.Path(__file__).with_name("imported.marker").write_text("imported")
def compute(ctx):
    return None
"""


def test_dry_run_reports_a_task_that_does_not_import(good, r):
    good.write_config(GOOD_TASKS.replace("checkjobs:compute", "checkjobs:renamed"))
    result = good.cli("run", "--dry-run", "--now", "2026-11-30T17:05")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == ("task compute would fail: cannot load checkjobs:renamed: module "
                                              "checkjobs has no attribute 'renamed'")
    assert sum("would fail" in line for line in result.stdout.splitlines()) == 1


def test_the_noop_tick_imports_no_task_module_and_dry_run_does(good, r):
    """The control (dry run) proves the marker appears when the module is imported."""
    write_jobs(good, IMPORT_MARKER)
    good.write_config("[schedule]\nauto_recover = false\n" + GOOD_TASKS)
    marker = good.root / "imported.marker"
    tick = subprocess.run([sys.executable, "-m", "tradeul_maint", "-q", "run", "--now", NOON], env=good.env(),
                          cwd=good.root, capture_output=True, text=True, timeout=60)
    assert (tick.returncode, tick.stdout, tick.stderr) == (0, "", "")
    assert not marker.exists()
    dry = good.run("run", "--dry-run", "--now", NOON)
    assert dry.returncode == 0 and marker.exists()


def test_a_read_only_replica_fails_the_write_check(good, tmp_path):
    (tmp_path / "replica").mkdir()
    proc, url = start_redis(tmp_path / "replica", "--replicaof", "127.0.0.1", "1", tcp=True)
    try:
        result = good.cli("check", "--now", NOON, TRADEUL_MAINT_REDIS_URL=url)
        assert result.exit_code == 1
        assert "failed: ReadOnlyError: You can't write against a read only replica" in \
            lines_of(result.stdout)["redis write"]
    finally:
        proc.terminate()
        proc.wait(10)
