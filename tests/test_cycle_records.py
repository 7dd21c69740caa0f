"""What a cycle records about its tasks beyond their state: attempts across cycles, the session's first
start, a failed Python task's traceback, a task slower than usual, and what a task may print."""

from __future__ import annotations

import datetime as dt
import json
import textwrap

from hypothesis import example, given, settings, strategies as st

from conftest import marker_tasks
from tradeul_maint.state.document import AttemptRecord, CycleRecord, SessionStatus, TaskRecord

DAY = "2026-11-25"
QUIET = "[schedule]\nauto_recover = false\n"


def status(r, day=DAY) -> dict:
    return json.loads(r.get(f"maintenance:status:{day}"))


def log_entries(project, name="maintenance.log") -> list[dict]:
    return [json.loads(line) for line in (project.log_dir / name).read_text().splitlines()]


def test_attempts_count_across_the_cycles_of_a_session(project, r):
    flag = project.root / "fixed"
    (project.root / "flaky.py").write_text(textwrap.dedent(f"""
        import os

        def run(ctx):
            if not os.path.exists({str(flag)!r}):
                raise RuntimeError("upstream not ready")
    """))
    project.write_config(QUIET + '[[tasks]]\nname = "flaky"\npython = "flaky:run"\n')
    assert project.cli("run", "--date", DAY).exit_code == 1
    first = status(r)
    flag.touch()
    assert project.cli("run", "--date", DAY).exit_code == 0
    doc = status(r)
    assert doc["task_details"]["flaky"]["attempts"] == 2 and doc["attempts"] == 2
    assert doc["started_at"] == first["started_at"]  # the session's first start


def test_a_task_rerun_keeps_the_sessions_first_start(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b"]))
    assert project.cli("run", "--date", DAY).exit_code == 0
    first = status(r)
    assert project.cli("run", "--date", DAY, "--task", "b").exit_code == 0
    doc = status(r)
    assert doc["started_at"] == first["started_at"] and doc["attempts"] == 2
    assert doc["task_details"]["a"]["attempts"] == 1 and doc["task_details"]["b"]["attempts"] == 2


def test_a_failed_python_task_leaves_its_traceback_scrubbed_in_the_state_and_the_errors_log(project, r):
    (project.root / "raising.py").write_text(textwrap.dedent("""
        def connect(url):
            raise ConnectionError("cannot reach " + url)

        def run(ctx):
            connect("postgres://loader:Sup3rSecret@db/prices")
    """))
    project.write_config(QUIET + '[[tasks]]\nname = "load"\npython = "raising:run"\n')
    assert project.cli("run", "--date", DAY).exit_code == 1
    trace = status(r)["task_details"]["load"]["traceback"]
    assert trace.startswith("Traceback (most recent call last)") and 'in connect' in trace
    assert trace.rstrip().endswith("ConnectionError: cannot reach postgres://loader:***@db/prices")
    failed = [e for e in log_entries(project, "maintenance_errors.log") if e["event"] == "task_failed"]
    assert "in connect" in failed[0]["traceback"]
    everything = (project.log_dir / "maintenance.log").read_text() + (project.log_dir / "maintenance_errors.log") \
        .read_text() + r.get(f"maintenance:status:{DAY}")
    assert "Sup3rSecret" not in everything


def test_a_task_much_slower_than_its_median_is_logged_as_such(project, r):
    (project.root / "timed.py").write_text("import time\n\ndef run(ctx):\n    time.sleep(ctx.params['s'])\n")
    project.write_config(QUIET + "[run]\nslow_min_seconds = 1\n"  # the default 5 s would call 1.5 s noise
                         '[[tasks]]\nname = "t"\npython = "timed:run"\nparams = { s = 0 }\n')
    for day in ("2026-11-19", "2026-11-20", "2026-11-23", "2026-11-24"):
        assert project.cli("run", "--date", day, "--now", "2026-11-25T18:00").exit_code == 0
        # What a loaded machine adds to a short task's time is noise this test is not about: pin the past.
        doc = status(r, day)
        doc["task_details"]["t"]["duration_seconds"] = 0.3
        r.set(f"maintenance:status:{day}", json.dumps(doc), keepttl=True)
    project.write_config(QUIET + "[run]\nslow_min_seconds = 1\n"
                         '[[tasks]]\nname = "t"\npython = "timed:run"\nparams = { s = 1.5 }\n')
    assert project.cli("run", "--date", DAY, "--now", "2026-11-25T18:00").exit_code == 0
    slow = [e for e in log_entries(project) if e["event"] == "task_slower_than_usual"]
    assert len(slow) == 1 and slow[0]["date"] == "2026-11-25" and slow[0]["task"] == "t"
    assert slow[0]["ratio"] > 2.0 and slow[0]["slow_factor"] == 2.0 and slow[0]["sessions"] == 5


def test_what_a_python_task_prints_is_its_output_not_the_runners(project, r):
    (project.root / "chatty.py").write_text(textwrap.dedent("""
        import sys

        def ok(ctx):
            print("progress: 50%")

        def bad(ctx):
            print("loaded 3 of 8 files")
            print("giving up", file=sys.stderr)
            return {"success": False, "error": "vendor timeout"}
    """))
    project.write_config(QUIET + '[[tasks]]\nname = "ok"\npython = "chatty:ok"\n'
                                 '[[tasks]]\nname = "bad"\npython = "chatty:bad"\n')
    result = project.run("-q", "run", "--date", DAY)
    assert result.returncode == 1
    assert "progress" not in result.stdout + result.stderr  # cron mails only the failure
    assert "bad failed: vendor timeout" in result.stderr
    doc = status(r)
    assert doc["task_details"]["bad"]["output"] == "loaded 3 of 8 files\ngiving up\n"
    completed = [e for e in log_entries(project) if e["event"] == "task_completed"]
    assert completed[0]["output"] == "progress: 50%\n"


def test_a_cycle_expects_each_task_to_take_its_median_over_the_lookback(project, r):
    """The live view's time left comes from the cycle's `expected_seconds`: the median of the lookback
    (4.0 s here), not the latest duration (9.0 s), the same figure `status --task` shows."""
    for day, seconds in (("2026-11-18", 3.0), ("2026-11-19", 4.0), ("2026-11-20", 4.0), ("2026-11-23", 5.0),
                         ("2026-11-24", 9.0)):
        r.set(f"maintenance:status:{day}", json.dumps({
            "date": day, "started_at": f"{day}T22:00:00+00:00", "completed_at": f"{day}T22:05:00+00:00",
            "all_success": True, "tasks": {"t": "completed"}, "attempts": 1,
            "task_details": {"t": {"duration_seconds": seconds, "attempts": 1}}}))
    project.write_config(QUIET + marker_tasks(project.root, ["t"]))
    assert project.cli("run", "--date", "2026-11-25", "--now", "2026-11-25T18:00").exit_code == 0
    [cycle] = [e for e in log_entries(project) if e["event"] == "starting_maintenance_cycle"]
    assert cycle["expected_seconds"] == {"t": 4.0}


# --- the document's text, reused from step to step ------------------------------------------

_NAMES = st.sampled_from(["a", "b"])
_TEXT = st.one_of(st.none(), st.text(max_size=5))
_NUMBER = st.one_of(st.none(), st.integers(-3, 3), st.floats(allow_nan=False, allow_infinity=False))
_RESULT = st.one_of(st.none(), st.dictionaries(st.sampled_from(["x", "y"]), st.integers(), max_size=2))
_STEPS = st.lists(st.one_of(
    st.tuples(st.just("record"), _NAMES),  # a new record for the task (a new object)
    st.tuples(st.just("set"), _NAMES, st.sampled_from(["started_at", "error", "reason", "output"]), _TEXT),
    st.tuples(st.just("set"), _NAMES, st.sampled_from(["duration_seconds", "attempts"]), _NUMBER),
    st.tuples(st.just("set"), _NAMES, st.just("result"), _RESULT),
    st.tuples(st.just("in place"), _NAMES, st.sampled_from(["x", "y"]), st.integers()),  # the result, changed in place
    st.tuples(st.just("forget"), _NAMES),
    st.tuples(st.just("cycle"), _TEXT),
    st.tuples(st.just("attempt"), _NAMES, st.integers(1, 3)),
    st.tuples(st.just("attempt set"), st.integers(0, 5), st.sampled_from(["outcome", "error", "finished_at"]), _TEXT),
    st.tuples(st.just("only"), _NAMES),  # the latest cycle's list, changed in place
    st.tuples(st.just("task list"), _NAMES, st.sampled_from(["f1", "f2"])),  # a new task list
    st.tuples(st.just("task list in place"), _NAMES, st.sampled_from(["f1", "f2"])),
), max_size=40)


def _whole(status: SessionStatus) -> dict:
    """The document as encoded whole, with nothing reused."""
    doc = dict(status.extra)
    doc.update({"date": status.session.isoformat(), "started_at": None, "completed_at": None,
                "duration_seconds": status.duration_seconds, "all_success": status.all_success,
                "tasks": status.tasks, "task_details": {n: r.to_json() for n, r in status.details.items()},
                "attempts": status.attempts, "run_id": status.run_id, "runner": status.runner,
                "interrupted": status.interrupted, "cycles": [c.to_json() for c in status.cycles]})
    if status.task_list is not None:
        doc["task_list"] = status.task_list
    return json.loads(json.dumps(doc))


@settings(max_examples=150, deadline=None)
@given(_STEPS)
@example([("task list", "a", "f1"), ("task list in place", "a", "f2"), ("task list in place", "b", "f1")])
@example([("record", "a"), ("set", "a", "result", {"x": 1}), ("in place", "a", "x", 2)])
@example([("record", "a"), ("set", "a", "attempts", 1), ("set", "a", "attempts", 2), ("cycle", None),
          ("attempt", "a", 1), ("attempt set", 0, "outcome", "failed")])
def test_every_step_writes_the_document_a_whole_encoding_would(steps):
    """Each step's text reuses the records that did not change: after any sequence of changes (a record
    replaced, a field set, a result changed in place, a cycle begun, an attempt added, the task list replaced or
    changed in place), it is the same."""
    status = SessionStatus(dt.date(2026, 11, 25), extra={"from_another_tool": [1]})
    for step in steps:
        kind, *args = step
        record = status.details.get(args[0]) if args and isinstance(args[0], str) else None
        if kind == "record":
            status.details[args[0]] = TaskRecord(started_at="2026-11-25T22:00:00.000+00:00")
            status.tasks[args[0]] = "in_progress"
        elif kind == "set" and record is not None:
            setattr(record, args[1], args[2])
        elif kind == "in place" and record is not None and isinstance(record.result, dict):
            record.result[args[1]] = args[2]
        elif kind == "forget":
            status.details.pop(args[0], None)
        elif kind == "cycle":
            status.begin_cycle(CycleRecord(started_at=args[0], trigger="cron"))
        elif kind == "attempt" and status.cycle is not None:
            status.cycle.add_attempt(AttemptRecord(args[0], args[1], started_at="2026-11-25T22:00:00.000+00:00"))
        elif kind == "attempt set" and status.cycle is not None and args[0] < len(status.cycle.attempts):
            setattr(status.cycle.attempts[args[0]], args[1], args[2])
        elif kind == "only" and status.cycle is not None:
            status.cycle.only.append(args[0])
        elif kind == "task list":
            status.task_list = {**(status.task_list or {}), args[0]: args[1]}
        elif kind == "task list in place" and status.task_list is not None:
            status.task_list[args[0]] = args[1]
        assert json.loads(status.to_json()) == _whole(status)
