"""`status --grid`: sessions x tasks, one cell per task per session, as Airflow's grid shows DAG runs.

Pure: it reads the status view (overview.py), which has already classified each session,
and gives each task of each session one state from CELLS. Every state has a symbol, so the
grid reads without colour (mail, a pipe, a screen reader); the legend lists them all.

A cell's state comes from its session's state first (nothing recorded: missing, due, not
yet due; an unreadable document: corrupt), then from the task's own state in the document.
States a future planner or runner records (a task held back until the close, or waiting
for its data) arrive as task states the `_TASK_CELLS` map names: adding one there, with its
row in CELLS, is all the grid needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from tradeul_maint import overview
from tradeul_maint.overview import SessionView, StatusView, TaskView
from tradeul_maint.state import COMPLETED, FAILED, IN_PROGRESS, PENDING, SKIPPED, iso


@dataclass(frozen=True)
class Cell:
    symbol: str
    plain: str  # the symbol where the terminal's encoding has no ✓ or ✗
    meaning: str


CELLS = {
    "completed": Cell("✓", "+", "completed"),
    "late": Cell("!", "!", "completed after the session's deadline"),
    "failed": Cell("✗", "x", "failed"),
    "skipped": Cell("-", "-", "skipped: a task it runs after did not complete"),
    "deferred": Cell(">", ">", "left to the newest session (catchup = \"latest\")"),
    "running": Cell("*", "*", "running"),
    "interrupted": Cell("~", "~", "interrupted: stopped by a signal, or its runner died"),
    "pending": Cell("o", "o", "not started yet"),
    "waiting": Cell("w", "w", "waiting: for the close, or for its data"),
    "missing": Cell("?", "?", "missed: nothing recorded and the window has passed"),
    "expired": Cell("/", "/", "expired: the window passed and the job does not catch it up (catchup)"),
    "not_yet_due": Cell(".", ".", "the window has not opened yet"),
    "corrupt": Cell("#", "#", "the status document is unreadable"),
}
NOT_A_TASK = " "  # the task is not in that session's document (added to the config since, or removed)

_SESSION_CELLS = {overview.MISSING: "missing", overview.DUE: "pending", overview.NOT_YET_DUE: "not_yet_due",
                  overview.CORRUPT: "corrupt"}
# A task's state in the document -> its cell; "waiting" is for a task the planner holds back (market_closed_only,
# recorded pending with the reason; wait_for, once the document records it as a state of its own).
_TASK_CELLS = {COMPLETED: "completed", FAILED: "failed", SKIPPED: "skipped", PENDING: "pending",
               IN_PROGRESS: "running", "waiting": "waiting"}


@dataclass(frozen=True)
class Grid:
    tasks: tuple[str, ...]  # the columns: configured tasks first, then those only documents mention
    rows: tuple[tuple[SessionView, dict[str, str | None]], ...]  # newest first; None: not a task of that session

    def to_json(self, view: StatusView) -> dict:
        """The `status --grid --json` document."""
        return {"now": iso(view.now), "calendar": view.calendar, "timezone": view.timezone,
                "order": "newest_first", "tasks": list(self.tasks),
                "legend": {state: {"symbol": c.symbol, "meaning": c.meaning} for state, c in CELLS.items()},
                "sessions": [{"date": s.session.isoformat(), "state": s.state, "late_seconds": s.late_seconds,
                              "cells": cells} for s, cells in self.rows]}


def build(view: StatusView, configured: tuple[str, ...]) -> Grid:
    recorded = [t.name for s in view.sessions for t in s.tasks]
    tasks = tuple(dict.fromkeys([*configured, *recorded]))
    rows = []
    for s in view.sessions:
        by_name = {t.name: t for t in s.tasks}
        rows.append((s, {name: cell(s, by_name[name]) if name in by_name else None for name in tasks}))
    return Grid(tasks, tuple(rows))


def cell(session: SessionView, task: TaskView) -> str:
    """One task's state in one session, a key of CELLS."""
    if session.state in _SESSION_CELLS:
        return _SESSION_CELLS[session.state]
    state = _TASK_CELLS.get(task.status, "pending")
    if session.state == overview.EXPIRED and state != "completed":
        return "expired"
    if state == "completed" and session.late and task.finished_at and task.finished_at > session.deadline:
        return "late"
    if state == "failed" and (task.error or "").startswith("interrupted"):
        return "interrupted"
    if state == "skipped" and task.note:  # skipped with a reason: catchup = "latest"
        return "deferred"
    if state == "pending" and task.note:  # left pending with a reason: market_closed_only, for the close
        return "waiting"
    if state == "running" and session.state != overview.RUNNING:
        return "interrupted"
    return state
