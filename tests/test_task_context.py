"""What a `python = "module:attr"` task receives and how its outcome is recorded, class-based tasks included.

The task callables below are referenced from the config as `test_task_context:<name>`,
the way an operator references their own module.
"""

import asyncio
import datetime as dt
import json

import pytest

SESSION = "2026-11-20"
NOW = "2026-11-21T12:00"


def status(r) -> dict:
    return json.loads(r.get(f"maintenance:status:{SESSION}"))


def python_task(name: str, target: str, extra: str = "") -> str:
    return f'[[tasks]]\nname = "{name}"\npython = "test_task_context:{target}"\n{extra}\n'


# --- the context ---------------------------------------------------------------------------


def inspect_context(ctx):
    ctx.redis.set("seen", json.dumps({"date": ctx.date.isoformat(), "session": ctx.session.isoformat(),
                                      "task": ctx.task, "run_id": ctx.run_id, "params": ctx.params}))
    ctx.logger.bind(rows=3).info("context_inspected")
    ctx.report(rows=3, tickers=2)
    return {"success": True, "tickers": 5, "note": "from the returned dict"}


def test_python_task_gets_session_redis_logger_params_and_run_id(project, r):
    project.write_config(python_task("inspect", "inspect_context",
                                     'params = { universe = "us", depth = 3 }'))
    result = project.cli("run", "--date", SESSION, "--now", NOW)
    assert result.exit_code == 0, result.output
    seen = json.loads(r.get("seen"))
    doc = status(r)
    assert seen == {"date": SESSION, "session": SESSION, "task": "inspect", "run_id": doc["run_id"],
                    "params": {"universe": "us", "depth": 3}}
    logged = [json.loads(line) for line in (project.log_dir / "maintenance.log").read_text().splitlines()]
    entry = next(e for e in logged if e["event"] == "context_inspected")
    assert (entry["date"], entry["task"], entry["run_id"], entry["rows"]) == (SESSION, "inspect", doc["run_id"], 3)


def test_reported_counts_and_returned_counts_land_in_the_status_document(project, r):
    project.write_config(python_task("inspect", "inspect_context"))
    assert project.cli("run", "--date", SESSION, "--now", NOW).exit_code == 0
    # The returned dict's scalars are merged over what report() collected.
    assert status(r)["task_details"]["inspect"]["result"] == {"rows": 3, "tickers": 5,
                                                               "note": "from the returned dict"}


# --- class-based tasks of the service being replaced, through the README's adapter ---------------


def legacy_task(task_class, db=None):
    def run(ctx):
        return task_class(ctx.redis, db).execute(ctx.date)
    return run


class LoadSomethingTask:
    """Shaped like the existing tasks: (redis, db) in, execute(target_date) -> {"success": bool, ...}."""

    def __init__(self, redis_client, db):
        self.redis = redis_client
        self.db = db

    def execute(self, target_date: dt.date) -> dict:
        assert isinstance(target_date, dt.date)
        self.redis.set("legacy:ran", target_date.isoformat())
        return {"success": True, "records_loaded": 42, "db": self.db}


class FailingTask(LoadSomethingTask):
    def execute(self, target_date: dt.date) -> dict:
        return {"success": False, "error": f"no data from the vendor for {target_date}", "records_loaded": 0}


class AsyncLoadTask(LoadSomethingTask):
    async def execute(self, target_date: dt.date) -> dict:
        await asyncio.sleep(0)
        return super().execute(target_date)


legacy_ok = legacy_task(LoadSomethingTask, db="timescale")
legacy_failing = legacy_task(FailingTask)
legacy_async = legacy_task(AsyncLoadTask, db="timescale")


@pytest.mark.parametrize("target", ["legacy_ok", "legacy_async"])
def test_class_based_task_plugs_in_unchanged(project, r, target):
    project.write_config(python_task("load", target))
    result = project.cli("run", "--date", SESSION, "--now", NOW)
    assert result.exit_code == 0, result.output
    assert r.get("legacy:ran") == SESSION
    doc = status(r)
    assert doc["tasks"] == {"load": "completed"} and doc["all_success"] is True
    assert doc["task_details"]["load"]["result"] == {"records_loaded": 42, "db": "timescale"}


def test_class_based_task_returning_failure_fails_the_task_with_its_error(project, r):
    project.write_config(python_task("load", "legacy_failing"))
    result = project.cli("run", "--date", SESSION, "--now", NOW)
    assert result.exit_code == 1
    assert f"load failed: no data from the vendor for {SESSION}" in result.stderr
    doc = status(r)
    assert doc["tasks"] == {"load": "failed"} and doc["all_success"] is False
    assert doc["task_details"]["load"]["error"] == f"no data from the vendor for {SESSION}"
    assert r.get(f"maintenance:executed:{SESSION}") is None


# --- async callables ----------------------------------------------------------------------


async def async_task(ctx):
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.01)
    ctx.report(loop_running=loop.is_running())


def test_async_task_runs_on_an_event_loop(project, r):
    project.write_config(python_task("fetch", "async_task"))
    assert project.cli("run", "--date", SESSION, "--now", NOW).exit_code == 0
    assert status(r)["task_details"]["fetch"]["result"] == {"loop_running": True}


SLOW_ASYNC_TASK = """
import asyncio


async def run(ctx):
    try:
        ctx.redis.set("awaiting", "yes")
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        ctx.redis.set("cancelled", "yes")  # cleanup runs: the timeout cancelled us
        raise
    ctx.redis.set("finished", "yes")
"""


def test_async_task_timeout_cancels_it(project, r):
    """The timeout's SIGTERM cancels the pending await and its cleanup runs; the 30 s sleep never finishes.

    What is judged needs the task to reach its await before its timeout: the task records
    that it did, and a machine too loaded for it gets the same run again with twice the
    timeout (from 0.5 s), rather than a verdict on what its scheduler happened to do."""
    (project.root / "slow_async.py").write_text(SLOW_ASYNC_TASK)  # imports asyncio only: it starts at once
    for timeout in (0.5, 1, 2, 4, 8):
        r.delete("awaiting", "cancelled", "finished")
        project.write_config(f'[[tasks]]\nname = "fetch"\npython = "slow_async:run"\ntimeout = {timeout}\n')
        result = project.cli("run", "--date", SESSION, "--now", NOW, "--force")
        assert result.exit_code == 1
        if r.get("awaiting"):
            break
    assert r.get("cancelled") == "yes" and r.get("finished") is None
    detail = status(r)["task_details"]["fetch"]
    assert detail["error"] == f"timed out after {timeout:g}s" and detail["duration_seconds"] < 30


