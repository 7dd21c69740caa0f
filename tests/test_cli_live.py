"""The live view of `run` and `recover`: drawn on a terminal (a pseudo-terminal here), never anywhere else.

Assertions are on what the view says (task names, states, dependencies, estimates), not on
how rich lays it out; the frames it redraws all land in the captured stream.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import select
import subprocess
import sys
import time

import pytest

from conftest import marker_tasks
from tradeul_maint.cli import live
from tradeul_maint.config.load import load_settings
from tradeul_maint.config.settings import Overrides, TaskSpec
from tradeul_maint.core import actions as core, basis
from tradeul_maint.run.events import CycleFinished, CycleStarted, TaskEnded, TaskRetrying, TaskStarted

NOW = "2026-11-30T18:00"  # after the window of Monday 2026-11-30; the lookback's earlier sessions are missing
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def in_terminal(project, *args: str, timeout: float = 60, **env: str) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; its exit code and what it drew, colours removed."""
    master, slave = os.openpty()
    terminal = {"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen([sys.executable, "-m", "tradeul_maint", *args], env=project.env(**terminal, **env),
                            cwd=project.root, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed its side
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, ANSI.sub("", b"".join(chunks).decode(errors="replace")).replace("\r", "")


def python_tasks(project, seconds: dict[str, float], deps: dict[str, list[str]], fail: tuple[str, ...] = ()) -> None:
    (project.root / "livetasks.py").write_text(
        "import time\n\n\ndef work(ctx):\n    time.sleep(ctx.params['seconds'])\n"
        "    if ctx.params.get('fail'):\n        raise RuntimeError('feed unavailable')\n")
    project.write_config("[run]\nmax_parallel = 2\n" + "".join(
        f'[[tasks]]\nname = "{name}"\npython = "livetasks:work"\n'
        f"params = {{ seconds = {pause}, fail = {'true' if name in fail else 'false'} }}\n"
        + (f"after = {json.dumps(deps[name])}\n" if name in deps else "") for name, pause in seconds.items()))


def seed_history(r, durations: dict[str, float]) -> None:
    """Done sessions before the 30th whose tasks took `durations`: what the view estimates from."""
    for session in ("2026-11-19", "2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25", "2026-11-27"):
        r.set(f"maintenance:status:{session}", json.dumps({
            "date": session, "started_at": f"{session}T22:00:00+00:00", "completed_at": f"{session}T22:05:00+00:00",
            "all_success": True, "tasks": {name: "completed" for name in durations}, "attempts": 1,
            "task_details": {name: {"duration_seconds": d, "attempts": 1} for name, d in durations.items()}}))


def test_run_on_a_terminal_shows_states_dependencies_and_estimates_as_the_cycle_runs(project, r):
    python_tasks(project, {"load": 1.5, "volume": 0.2, "atr": 0.2}, {"atr": ["load"]})
    seed_history(r, {"load": 4.0, "volume": 0.5, "atr": 1.0})
    code, screen = in_terminal(project, "run", "--date", "2026-11-30", "--now", NOW)
    assert code == 0, screen
    assert "2026-11-30 (manual: no maintenance recorded), attempt 1" in screen
    assert re.search(r"atr\s+waiting\s.*waiting on load \(running\)", screen)  # and why
    assert re.search(r"load\s+running\s+1\s+\d+\.\ds\s+~\d+\.\ds", screen)  # elapsed, and time left from 4.0s
    assert re.search(r"about \d+\.\ds left", screen)
    done = re.search(r"load\s+completed\s+1\s+(\d+\.\d)s", screen)  # the last frame stays on screen
    # with the task's own time (1.5 s of sleep, more on a loaded machine), not the 4.0 s it was expected to take
    assert done and 1.5 <= float(done.group(1)) < 4.0, screen
    assert re.search(r"attempt 1: 3/3 tasks completed in \d+\.\ds", screen)  # the view's own last frame
    assert re.search(r"^2026-11-30: 3/3 tasks completed in \d+\.\ds$", screen, re.MULTILINE)  # the summary


def test_a_failure_and_a_skipped_dependent_are_shown_with_their_reason(project, r):
    python_tasks(project, {"load": 0.3, "atr": 0.1}, {"atr": ["load"]}, fail=("load",))
    code, screen = in_terminal(project, "run", "--date", "2026-11-30", "--now", NOW)
    assert code == 1, screen
    assert re.search(r"load\s+failed\s+1\s.*RuntimeError: feed unavailable", screen)
    assert re.search(r"atr\s+skipped\s.*dependency load did not complete", screen)


def test_recover_on_a_terminal_keeps_a_line_per_finished_session(project, r):
    project.write_config(marker_tasks(project.root, ["a", "b"], deps={"b": ["a"]}, sleep=0.2))
    code, screen = in_terminal(project, "recover", "--since", "2026-11-24", "--until", "2026-11-25", "--now", NOW)
    assert code == 0, screen
    assert "2026-11-24 (no maintenance recorded), attempt 1" in screen
    assert "2026-11-25 (no maintenance recorded), attempt 1" in screen
    assert re.search(r"^2026-11-24: 2/2 tasks completed in \d+\.\ds$", screen, re.MULTILINE)


def test_off_a_terminal_the_output_is_the_summary_alone(project, r):
    python_tasks(project, {"load": 0.3, "atr": 0.1}, {"atr": ["load"]})
    piped = project.run("run", "--date", "2026-11-30", "--now", NOW, TERM="xterm-256color")
    assert piped.returncode == 0 and piped.stderr == ""
    assert re.fullmatch(r"2026-11-30: 2/2 tasks completed in \d+\.\ds\n", piped.stdout)
    quiet_code, quiet_screen = in_terminal(project, "-q", "run", "--date", "2026-11-27", "--now", NOW)
    assert (quiet_code, quiet_screen.strip()) == (0, "")  # -q: no live view, no summary, on a terminal too
    nothing_code, nothing = in_terminal(project, "run", "--date", "2026-11-27", "--now", NOW)
    assert (nothing_code, nothing.strip()) == (0, "2026-11-27: already done (use --force to run it again)")


def test_the_view_takes_expected_seconds_from_the_cycle():
    view = live.LiveView({"a": TaskSpec("a", command=("x",)), "b": TaskSpec("b", command=("x",), after=("a",))},
                         parallel=1, clock=lambda: 10.0)
    view(CycleStarted(dt.date(2026, 11, 30), 2, "manual", ("a", "b"), {"a": 30.0, "b": 5.0}))
    view(TaskStarted("a", 1))
    view.clock = lambda: 22.0
    cycle = view.cycles[-1]
    assert view._left(cycle.tasks["a"], 22.0) == "~18.0s" and view._left(cycle.tasks["b"], 22.0) == "~5.0s"
    assert view.time_left(cycle, 22.0) == pytest.approx(23.0)
    assert view.why(cycle, cycle.tasks["b"], 22.0) == "waiting on a (running)"
    view(TaskRetrying("a", 1, 30, "boom\nmore"))
    assert cycle.tasks["a"].attempt == 2 and view.why(cycle, cycle.tasks["a"], 32.0) == "next attempt in 20.0s; boom"


def test_the_runner_tells_its_listener_each_step_of_the_cycle_in_typed_events(project):
    """The screen's interface is these events, whatever the log calls them: a run heard in process, step by step."""
    project.write_config("[run]\nmax_parallel = 2\n" + marker_tasks(project.root, ["load", "atr", "bad"],
                                                                     {"atr": ["load"]}, fail=("bad",)))
    heard = []
    settings = load_settings(Overrides(), env=project.env())
    (report,) = core.run(basis.prepare(settings, NOW), dt.date(2026, 11, 30), listener=heard.append)
    assert not report.success
    assert heard[0] == CycleStarted(dt.date(2026, 11, 30), 1, heard[0].reason, ("load", "atr", "bad"), {})
    assert heard[-1] == CycleFinished(2, 3, heard[-1].seconds)
    by_task = {name: [e for e in heard if getattr(e, "task", None) == name] for name in ("load", "atr", "bad")}
    assert by_task["load"] == [TaskStarted("load", 1), TaskEnded("load", "completed", 1)]
    assert by_task["atr"] == [TaskStarted("atr", 1), TaskEnded("atr", "completed", 1)]
    assert heard.index(by_task["load"][1]) < heard.index(by_task["atr"][0])  # after its dependency, as run
    started, ended = by_task["bad"]
    assert started == TaskStarted("bad", 1) and (ended.task, ended.state, ended.attempts) == ("bad", "failed", 1)
    assert ended.note  # why it failed, as the status document says
