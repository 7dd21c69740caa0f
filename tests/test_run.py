"""`run`: cron mode, manual triggers, resume, state in Redis, tasks and their failures."""

from __future__ import annotations

import json
import sys
import textwrap
import time

import pytest

from conftest import count_runs, marker_tasks

DAY = "2026-11-25"  # a Wednesday; window 17:00-17:30 New York
INSIDE = "2026-11-25T17:05"
QUIET = "[schedule]\nauto_recover = false\n"


def status(r, day=DAY):
    raw = r.get(f"maintenance:status:{day}")
    return json.loads(raw) if raw else None


# --- cron mode ----------------------------------------------------------------------------


def test_cron_outside_the_window_prints_nothing_and_exits_0(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    for now in ("2026-11-25T16:59", "2026-11-25T17:30", "2026-11-26T17:05", "2026-11-28T17:05"):
        result = project.cli("run", "--now", now)
        assert result.exit_code == 0 and result.output == "", (now, result.output)
    assert count_runs(project.root, "a") == []
    assert r.keys("maintenance:*") == []


def test_cron_inside_the_window_runs_once_then_stays_silent(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b"], deps={"b": ["a"]}))
    first = project.cli("run", "--now", INSIDE)
    assert first.exit_code == 0
    assert f"{DAY}: 2/2 tasks completed" in first.stdout
    second = project.cli("run", "--now", "2026-11-25T17:10")
    assert second.exit_code == 0 and second.output == ""
    assert count_runs(project.root, "a") == [DAY] and count_runs(project.root, "b") == [DAY]


def test_state_documents_follow_the_replaced_service(project, r):
    project.write_config(QUIET + "[redis]\nstatus_ttl_days = 20\n" + marker_tasks(project.root, ["a", "b"]))
    project.cli("run", "--now", INSIDE)
    doc = status(r)
    for field in ("date", "started_at", "completed_at", "duration_seconds", "all_success", "tasks"):
        assert field in doc
    assert doc["date"] == DAY and doc["all_success"] is True
    assert doc["tasks"] == {"a": "completed", "b": "completed"}
    assert doc["attempts"] == 1 and doc["run_id"]
    assert r.get(f"maintenance:executed:{DAY}") == "1"
    assert r.get("maintenance:last_run") == DAY
    assert 19 * 86400 < r.ttl(f"maintenance:status:{DAY}") <= 20 * 86400
    assert 19 * 86400 < r.ttl(f"maintenance:executed:{DAY}") <= 20 * 86400
    assert r.get("maintenance:lock") is None  # released


def test_failed_task_is_never_marked_done(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b", "c"], deps={"c": ["b"]}, fail=("b",)))
    result = project.cli("run", "--now", INSIDE)
    assert result.exit_code == 1
    assert "b failed" in result.stderr and "exit code 3" in result.stderr
    assert "c skipped: dependency b did not complete" in result.stderr
    doc = status(r)
    assert doc["all_success"] is False
    assert doc["tasks"] == {"a": "completed", "b": "failed", "c": "skipped"}
    assert "something went wrong in b" in doc["task_details"]["b"]["output"]
    assert r.get(f"maintenance:executed:{DAY}") is None
    assert count_runs(project.root, "c", "started") == []  # a skipped task never runs


def test_cron_retry_waits_for_the_doubling_backoff_and_stops_at_max_attempts(project, r):
    project.write_config("[schedule]\nauto_recover = false\nwindow_minutes = 120\n"
                         "[run]\nmax_attempts = 3\nretry_backoff_minutes = 5\n"
                         + marker_tasks(project.root, ["a"], fail=("a",)))
    assert project.cli("run", "--now", "2026-11-25T17:00").exit_code == 1  # attempt 1
    assert project.cli("run", "--now", "2026-11-25T17:04").output == ""  # backoff 5 min
    assert project.cli("run", "--now", "2026-11-25T17:06").exit_code == 1  # attempt 2
    assert project.cli("run", "--now", "2026-11-25T17:15").output == ""  # backoff now 10 min
    assert project.cli("run", "--now", "2026-11-25T17:17").exit_code == 1  # attempt 3
    gave_up = project.cli("run", "--now", "2026-11-25T18:30")
    assert gave_up.exit_code == 0 and gave_up.output == ""
    assert len(count_runs(project.root, "a", "started")) == 3
    assert status(r)["attempts"] == 3
    dry = project.cli("run", "--dry-run", "--now", "2026-11-25T18:30")
    assert "failed, attempt 3 of 3: gave up" in dry.stdout
    manual = project.cli("run", "--date", DAY, "--now", "2026-11-25T18:30")  # a manual run always tries
    assert manual.exit_code == 1
    assert len(count_runs(project.root, "a", "started")) == 4


# --- manual mode ----------------------------------------------------------------------------


def test_manual_run_skips_a_done_session_unless_forced(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    assert project.cli("run", "--date", DAY).exit_code == 0
    again = project.cli("run", "--date", DAY)
    assert again.exit_code == 0 and "already done" in again.stdout
    assert count_runs(project.root, "a") == [DAY]
    forced = project.cli("run", "--date", DAY, "--force")
    assert forced.exit_code == 0
    assert count_runs(project.root, "a") == [DAY, DAY]
    assert status(r)["attempts"] == 2


def test_task_option_reruns_one_task_without_touching_the_others(project, r):
    project.write_config(marker_tasks(project.root, ["a", "b"], deps={"b": ["a"]}))
    project.cli("run", "--date", DAY)
    result = project.cli("run", "--date", DAY, "--task", "b")
    assert result.exit_code == 0
    assert count_runs(project.root, "a") == [DAY] and count_runs(project.root, "b") == [DAY, DAY]
    assert status(r)["tasks"] == {"a": "completed", "b": "completed"} and status(r)["all_success"]


def test_new_task_does_not_reopen_done_sessions_but_can_be_run_for_one(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    project.cli("run", "--date", DAY)
    project.write_config(QUIET + marker_tasks(project.root, ["a", "new"]))
    assert project.cli("run", "--now", "2026-11-25T17:10").output == ""  # still done
    assert count_runs(project.root, "new") == []
    assert project.cli("run", "--date", DAY, "--task", "new").exit_code == 0
    assert count_runs(project.root, "new") == [DAY] and count_runs(project.root, "a") == [DAY]


def test_task_whose_dependency_is_not_completed_is_skipped(project, r):
    project.write_config(marker_tasks(project.root, ["a", "b"], deps={"b": ["a"]}))
    result = project.cli("run", "--date", DAY, "--task", "b")
    assert result.exit_code == 1
    assert status(r)["tasks"]["b"] == "skipped"
    assert count_runs(project.root, "b", "started") == []


def test_dry_run_prints_the_plan_and_changes_nothing(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b"]))
    result = project.cli("run", "--dry-run", "--now", INSIDE)
    assert result.exit_code == 0
    assert f"would run {DAY} (inside its window (17:00-17:30)): a, b" in result.stdout
    assert r.keys("*") == [] and count_runs(project.root, "a", "started") == []
    manual = project.cli("run", "--dry-run", "--date", "2026-11-24")
    assert "would run 2026-11-24" in manual.stdout and r.keys("*") == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--date", "2026-11-26"], "2026-11-26 is not a trading session of XNYS (Thanksgiving); the next "
                                    "session is 2026-11-27 (Friday)"),
        (["--date", "2026-11-28"], "2026-11-28 is not a trading session of XNYS (a Saturday)"),
        (["--date", "2026-13-01"], "expected a date YYYY-MM-DD"),
        (["--date", "2026-11-30", "--now", "2026-11-27T17:00"], "2026-11-30 is in the future"),
        (["--date", "1990-01-02"], "outside the XNYS calendar"),
        (["--task", "a"], "--task needs --date"),
        (["--force"], "--force needs --date"),
        (["--date", DAY, "--task", "ghost"], "unknown task 'ghost'"),
        (["--now", "yesterday"], "--now 'yesterday'"),
    ],
)
def test_bad_usage_exits_2_with_one_line(project, r, args, message):
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.cli("run", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert r.keys("*") == []


def test_unknown_option_is_usage_error(project):
    project.write_config(marker_tasks(project.root, ["a"]))
    assert project.cli("run", "--colour").exit_code == 2


# --- resume and damaged state -------------------------------------------------------------


def test_resume_runs_only_the_tasks_that_did_not_complete(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b", "c"], fail=("b",)))
    project.cli("run", "--date", DAY)
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b", "c"]))
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 0
    assert count_runs(project.root, "a") == [DAY] and count_runs(project.root, "c") == [DAY]
    assert count_runs(project.root, "b") == [DAY]
    assert len(count_runs(project.root, "b", "started")) == 2


def test_in_progress_task_of_a_dead_runner_is_detected_and_rerun(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b"]))
    r.set(f"maintenance:status:{DAY}", json.dumps({
        "date": DAY, "started_at": "2026-11-25T22:00:00+00:00", "completed_at": None, "all_success": False,
        "tasks": {"a": "completed", "b": "in_progress"}, "attempts": 1, "run_id": "dead"}))
    result = project.cli("run", "--now", INSIDE)
    assert result.exit_code == 0
    assert count_runs(project.root, "a") == [] and count_runs(project.root, "b") == [DAY]
    assert status(r)["tasks"] == {"a": "completed", "b": "completed"} and status(r)["attempts"] == 2
    log = (project.log_dir / "maintenance.log").read_text()
    assert '"event": "interrupted_task_detected"' in log


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '{"tasks": "a"}'])
def test_corrupted_status_document_counts_as_not_done(project, r, garbage):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    r.set(f"maintenance:status:{DAY}", garbage)
    result = project.cli("run", "--now", INSIDE)
    assert result.exit_code == 0, result.output
    assert count_runs(project.root, "a") == [DAY]
    assert status(r)["all_success"] is True
    assert '"event": "status_document_unreadable"' in (project.log_dir / "maintenance.log").read_text()


def test_legacy_done_document_is_respected(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    r.set(f"maintenance:status:{DAY}", json.dumps({
        "date": DAY, "started_at": "2026-11-25T17:00:01", "completed_at": "2026-11-25T17:03:12",
        "all_success": True, "tasks": {"load_ohlc": "completed"}}))
    assert project.cli("run", "--now", INSIDE).output == ""
    assert count_runs(project.root, "a") == []


# --- tasks ------------------------------------------------------------------------------------


def test_command_gets_date_substitution_and_environment(project, r):
    out = project.root / "env.txt"
    script = f"import os,sys; open(r'{out}','w').write(' '.join([sys.argv[1], os.environ['TRADEUL_MAINT_DATE'], " \
             f"os.environ['TRADEUL_MAINT_TASK']]))"
    project.write_config(f"[[tasks]]\nname = \"show\"\ncommand = ['{sys.executable}', '-c', \"{script}\", "
                         f"'--date={{date}}']\n")
    assert project.cli("run", "--date", DAY).exit_code == 0
    assert out.read_text() == f"--date={DAY} {DAY} show"


def test_timeout_kills_the_whole_process_group(project, r):
    # sh starts in milliseconds, so the grandchild's pid is written long before the timeout even on a loaded
    # machine (a Python task's own start-up alone took over 1 s under CI's load)
    pidfile = project.root / "grandchild.pid"
    project.write_config(f"[[tasks]]\nname = \"slow\"\ncommand = ['sh', '-c', 'sleep 60 & echo $! > {pidfile}; sleep 60']\n"
                         "timeout = 3\n")
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 1 and "timed out after 3s" in result.stderr
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(grandchild):
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_retries_within_a_cycle_with_doubling_delay(project, r):
    flag = project.root / "attempts"
    script = f"import sys; p=r'{flag}'; n=len(open(p).read()) if __import__('os').path.exists(p) else 0; " \
             f"open(p,'a').write('x'); sys.exit(0 if n >= 2 else 1)"
    project.write_config(f"[[tasks]]\nname = \"flaky\"\ncommand = ['{sys.executable}', '-c', \"{script}\"]\n"
                         "retries = 2\nretry_delay = 0.1\n")
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 0
    assert flag.read_text() == "xxx"
    assert status(r)["task_details"]["flaky"]["attempts"] == 3


def test_python_tasks_sync_async_and_failure_dict(project, r):
    (project.root / "mytasks.py").write_text(textwrap.dedent("""
        import asyncio

        def ok(ctx):
            ctx.redis.set("seen:" + ctx.date.isoformat(), ctx.task)
            ctx.report(rows=3)

        async def slow(ctx):
            await asyncio.sleep(0.01)
            return {"success": True, "items": 2}

        def refuses(ctx):
            return {"success": False, "error": "upstream had no data"}

        def raises(ctx):
            raise RuntimeError("boom")
    """))
    project.write_config(textwrap.dedent("""
        [[tasks]]
        name = "ok"
        python = "mytasks:ok"
        [[tasks]]
        name = "slow"
        python = "mytasks:slow"
        [[tasks]]
        name = "refuses"
        python = "mytasks:refuses"
        [[tasks]]
        name = "raises"
        python = "mytasks:raises"
    """))
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 1
    doc = status(r)
    assert doc["tasks"] == {"ok": "completed", "slow": "completed", "refuses": "failed", "raises": "failed"}
    assert r.get(f"seen:{DAY}") == "ok"
    assert doc["task_details"]["ok"]["result"] == {"rows": 3}
    assert doc["task_details"]["slow"]["result"] == {"items": 2}
    assert doc["task_details"]["refuses"]["error"] == "upstream had no data"
    assert doc["task_details"]["raises"]["error"] == "RuntimeError: boom"


def test_max_parallel_runs_independent_tasks_side_by_side(project, r):
    names = ["p1", "p2", "p3", "p4"]
    project.write_config("[run]\nmax_parallel = 4\n" + marker_tasks(project.root, names, sleep=1.0))
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 0
    assert status(r)["duration_seconds"] < 3.0  # serially it would be over 4 s
    assert all(count_runs(project.root, n) == [DAY] for n in names)


def test_dependencies_order_execution(project, r):
    project.write_config("[run]\nmax_parallel = 3\n" + marker_tasks(
        project.root, ["load", "atr", "rvol", "snapshot"],
        deps={"atr": ["load"], "rvol": ["load"], "snapshot": ["atr", "rvol"]}, sleep=0.2))
    assert project.cli("run", "--date", DAY).exit_code == 0
    details = status(r)["task_details"]
    assert details["load"]["finished_at"] <= details["atr"]["started_at"]
    assert details["load"]["finished_at"] <= details["rvol"]["started_at"]
    assert max(details["atr"]["finished_at"], details["rvol"]["finished_at"]) <= details["snapshot"]["started_at"]


def test_a_run_started_inside_the_window_goes_on_after_it_ends(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b"], deps={"b": ["a"]}, sleep=1.0))
    result = project.cli("run", "--now", "2026-11-25T17:29:59.500")
    assert result.exit_code == 0
    assert count_runs(project.root, "b") == [DAY]
    assert status(r)["completed_at"] > "2026-11-25T22:30:00"


def test_command_output_is_captured_with_a_size_cap(project, r):
    script = "import sys; sys.stdout.write('x' * 1000000 + '\\\\nlast line\\\\n'); sys.exit(1)"
    project.write_config(f"[[tasks]]\nname = \"noisy\"\ncommand = ['{sys.executable}', '-c', \"{script}\"]\n")
    assert project.cli("run", "--date", DAY).exit_code == 1
    output = status(r)["task_details"]["noisy"]["output"]
    assert output.endswith("last line\n") and len(output) <= 4100


def test_quiet_success_prints_nothing(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.cli("-q", "run", "--date", DAY)
    assert result.exit_code == 0 and result.output == ""


def test_password_in_a_task_error_is_hidden_from_output_and_state(project, r):
    (project.root / "password_in_error.py").write_text(
        "def connect(ctx):\n    raise ConnectionError('cannot reach redis://app:s3cr3t@cache:6379/0')\n")
    project.write_config('[[tasks]]\nname = "leaky"\npython = "password_in_error:connect"\n')
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 1 and "redis://app:***@cache:6379/0" in result.stderr
    assert "s3cr3t" not in result.output + r.get(f"maintenance:status:{DAY}")


def test_counts_reported_before_a_failure_are_kept(project, r):
    (project.root / "partial_task.py").write_text(
        "def run(ctx):\n    ctx.report(rows_loaded=40)\n    raise ValueError('row 41 is malformed')\n")
    project.write_config('[[tasks]]\nname = "partial"\npython = "partial_task:run"\n')
    assert project.cli("run", "--date", DAY).exit_code == 1
    details = status(r)["task_details"]["partial"]
    assert details["result"] == {"rows_loaded": 40} and details["error"] == "ValueError: row 41 is malformed"


def test_an_unexpected_error_is_one_line_without_traceback(project, monkeypatch):
    project.write_config(marker_tasks(project.root, ["a"]))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full at redis://u:pw123@h:1")

    monkeypatch.setattr("tradeul_maint.core.actions.run", broken)
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 70
    assert result.stderr.strip() == ("tradeul-maint: unexpected error: RuntimeError: disk full at redis://u:***@h:1 "
                                     "(run with -v for the traceback)")
    assert "Traceback" in project.cli("-v", "run", "--date", DAY).stderr


def test_a_python_task_calling_sys_exit_fails_without_hanging_the_runner(project, r):
    (project.root / "exits.py").write_text("import sys\n\ndef run(ctx):\n    sys.exit(3)\n")
    project.write_config('[[tasks]]\nname = "exits"\npython = "exits:run"\n'
                         '[[tasks]]\nname = "after_it"\ncommand = ["true"]\n')
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 1
    assert status(r)["tasks"] == {"exits": "failed", "after_it": "completed"}
    assert status(r)["task_details"]["exits"]["error"] == "SystemExit: 3"
