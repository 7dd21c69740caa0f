"""`status --grid`: sessions x tasks, a symbol per cell readable without colour, a legend, and --json.

Monday 2026-11-30 at noon looks back over 2026-11-19 .. 2026-11-30; the sessions are made by real runs
(cron in the window, `recover` of two failed sessions, a late catch-up), a running cycle by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from conftest import marker_tasks
from tradeul_maint.plan.calendar import Window
from tradeul_maint.view import grid, model
from tradeul_maint.view.model import SessionView, TaskView

NOON = "2026-11-30T12:00"
TASKS = ["a", "b", "c", "d"]


def configure(project, fail: tuple[str, ...] = ()) -> None:
    project.write_config("[schedule]\nauto_recover = false\n"
                         + marker_tasks(project.root, TASKS, deps={"b": ["a"], "d": ["b"]}, fail=fail)
                         + '\n[[tasks]]\nname = "latest"\ncommand = ["true"]\ncatchup = "latest"\n')


def seed(project, r) -> None:
    configure(project)
    assert project.cli("run", "--now", "2026-11-19T17:05").exit_code == 0  # on time, by cron
    configure(project, fail=("b",))
    assert project.cli("recover", "--since", "2026-11-20", "--until", "2026-11-23",
                       "--now", "2026-11-23T17:45").exit_code == 1  # b failed, d skipped; `latest` left to the 23rd
    configure(project)
    assert project.cli("recover", "--since", "2026-11-25", "--until", "2026-11-25",
                       "--now", "2026-11-27T08:00").exit_code == 0  # done, 38 hours late
    r.set("maintenance:status:2026-11-27", json.dumps({
        "date": "2026-11-27", "started_at": "2026-11-27T22:00:00+00:00", "all_success": False, "run_id": "live",
        "tasks": {"a": "completed", "b": "in_progress", "c": "pending", "d": "pending", "latest": "pending"},
        "task_details": {"a": {"started_at": "2026-11-27T22:00:00+00:00", "finished_at": "2026-11-27T22:00:05+00:00"},
                         "b": {"started_at": "2026-11-27T22:00:05+00:00"}}}))
    r.set("maintenance:lock", json.dumps({"host": "h", "pid": 1, "since": "x", "run_id": "live", "nonce": "n"}),
          px=60000)


def grid_rows(output: str) -> dict[str, list[str]]:
    """session -> [its state, a symbol per task], from the plain grid: the cells sit under their column's name."""
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("session "))
    starts = [m.start() for m in re.finditer(r"\S+", lines[header])]  # session, state, then one per task
    widths = [m.end() - m.start() for m in re.finditer(r"\S+", lines[header])]
    rows = {}
    for line in lines[header + 1:]:
        if not line.strip():
            break
        padded = line.ljust(starts[-1] + widths[-1])
        cells = [padded[s:s + w].strip() or " " for s, w in zip(starts[2:], widths[2:])]
        rows[line[:10]] = [padded[starts[1]:starts[2]].strip()] + cells
    return rows


def test_the_grid_shows_each_task_of_each_session_with_a_symbol(project, r):
    seed(project, r)
    result = project.cli("status", "--grid", "--now", NOON)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Last 7 XNYS sessions x tasks, newest first\n")
    assert grid_rows(result.stdout) == {
        "2026-11-30": ["not yet due", ".", ".", ".", ".", "."],
        "2026-11-27": ["running", "✓", "*", "o", "o", "o"],
        "2026-11-25": ["done late", "!", "!", "!", "!", "!"],
        "2026-11-24": ["missing", "?", "?", "?", "?", "?"],
        "2026-11-23": ["failed", "✓", "✗", "✓", "-", "✓"],
        "2026-11-20": ["failed", "✓", "✗", "✓", "-", ">"],
        "2026-11-19": ["done", "✓", "✓", "✓", "✓", "✓"],
    }
    legend = result.stdout.split("legend:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in legend] == [c.symbol for c in grid.CELLS.values()] + ["(blank)"]
    assert "  !  completed after the session's deadline" in legend


def test_the_grid_as_json_and_over_a_range(project, r):
    seed(project, r)
    doc = json.loads(project.cli("status", "--grid", "--json", "--since", "2026-11-20", "--until", "2026-11-25",
                                 "--now", NOON).stdout)
    assert doc["tasks"] == [*TASKS, "latest"] and doc["order"] == "newest_first"
    assert [s["date"] for s in doc["sessions"]] == ["2026-11-25", "2026-11-24", "2026-11-23", "2026-11-20"]
    cells = {s["date"]: s["cells"] for s in doc["sessions"]}
    assert cells["2026-11-20"] == {"a": "completed", "b": "failed", "c": "completed", "d": "skipped",
                                   "latest": "deferred"}
    assert set(cells["2026-11-25"].values()) == {"late"} and set(cells["2026-11-24"].values()) == {"missing"}
    late = next(s for s in doc["sessions"] if s["date"] == "2026-11-25")
    assert late["state"] == "done" and late["late_seconds"] >= 38 * 3600
    assert doc["legend"]["failed"] == {"symbol": "✗", "meaning": "failed"}
    text = project.cli("status", "--grid", "--since", "2026-11-20", "--until", "2026-11-25", "--now", NOON).stdout
    assert text.startswith("XNYS sessions 2026-11-20 to 2026-11-25 x tasks, newest first")


def test_the_grid_reads_without_unicode_too(project, r):
    configure(project, fail=("b",))
    assert project.cli("run", "--date", "2026-11-25", "--now", NOON).exit_code == 1
    result = project.run("status", "--grid", "--since", "2026-11-25", "--until", "2026-11-25", "--now", NOON,
                         PYTHONIOENCODING="ascii")
    assert result.returncode == 0, result.stderr
    # `latest` is left to 2026-11-27, the newest session whose window had opened by Monday noon.
    assert grid_rows(result.stdout)["2026-11-25"] == ["failed", "+", "x", "+", "-", ">"]
    assert "  x  failed" in result.stdout and "✓" not in result.stdout


def test_a_task_added_since_is_blank_in_older_sessions(project, r):
    project.write_config("[schedule]\nauto_recover = false\n" + marker_tasks(project.root, ["a"]))
    assert project.cli("run", "--date", "2026-11-25", "--now", "2026-11-25T17:05").exit_code == 0
    project.write_config("[schedule]\nauto_recover = false\n" + marker_tasks(project.root, ["a", "new"]))
    doc = json.loads(project.cli("status", "--grid", "--json", "--since", "2026-11-25", "--until", "2026-11-25",
                                 "--now", NOON).stdout)
    assert {s["date"]: s["cells"] for s in doc["sessions"]}["2026-11-25"] == {"a": "completed", "new": None}


@pytest.mark.parametrize("args", [["--grid", "--date", "2026-11-25"], ["--grid", "--task", "a"],
                                  ["--grid", "--check"]])
def test_grid_excludes_the_other_views(project, args):
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.cli("status", *args, "--now", NOON)
    assert result.exit_code == 2 and "exclude each other" in result.stderr


WINDOW = Window(dt.date(2026, 11, 25), dt.datetime(2026, 11, 25, 22, tzinfo=dt.timezone.utc),
                dt.datetime(2026, 11, 25, 22, 30, tzinfo=dt.timezone.utc))
DEADLINE = dt.datetime(2026, 11, 25, 23, tzinfo=dt.timezone.utc)


def session(state: str, done_at: dt.datetime | None = None) -> SessionView:
    return SessionView(dt.date(2026, 11, 25), state, WINDOW, True, 0, 1, 1, None, None, None, None, None, (),
                       deadline=DEADLINE, done_at=done_at)


def task(status: str, finished: dt.datetime | None = None, error: str | None = None,
         note: str | None = None) -> TaskView:
    return TaskView("t", status, 1, None, finished, None, error, note)


@pytest.mark.parametrize("s, t, expected", [
    (session(model.DONE, DEADLINE - dt.timedelta(minutes=5)), task("completed", DEADLINE), "completed"),
    (session(model.DONE, DEADLINE + dt.timedelta(hours=2)), task("completed", DEADLINE + dt.timedelta(hours=1)),
     "late"),
    (session(model.DONE, DEADLINE + dt.timedelta(hours=2)), task("completed", DEADLINE - dt.timedelta(hours=1)),
     "completed"),  # it had completed on time: another task made the session late
    (session(model.FAILED_STATE), task("failed", error="exit code 3"), "failed"),
    (session(model.FAILED_STATE), task("failed", error="interrupted by SIGTERM"), "interrupted"),
    (session(model.INTERRUPTED), task("in_progress"), "interrupted"),
    (session(model.RUNNING), task("in_progress"), "running"),
    (session(model.RUNNING), task("pending"), "pending"),
    (session(model.FAILED_STATE), task("skipped", error="dependency a did not complete"), "skipped"),
    (session(model.DONE), task("skipped", note='catchup = "latest": runs for 2026-11-27 only'), "deferred"),
    (session(model.RUNNING), task("waiting"), "waiting"),  # where a held-back task's state plugs in
    (session(model.MISSING), task("pending"), "missing"),
    (session(model.DUE), task("pending"), "pending"),
    (session(model.NOT_YET_DUE), task("pending"), "not_yet_due"),
    (session(model.CORRUPT), task("pending"), "corrupt"),
])
def test_each_cell_state(s, t, expected):
    assert grid.cell(s, t) == expected and expected in grid.CELLS
