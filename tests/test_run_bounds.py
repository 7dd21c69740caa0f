"""Bounded runs by default: every task has a timeout unless it says `timeout = 0`, and a run still going at
`[run] max_run_minutes` is stopped as a signal stops it (every process of its tasks ended, then recorded as
interrupted), exiting 124."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from conftest import count_runs, processes_running, wait_for
from tradeul_maint.base.errors import EXIT_RUN_DEADLINE, EXIT_SIGHUP
from tradeul_maint.config.load import load_settings
from tradeul_maint.config.settings import DEFAULT_TASK_TIMEOUT, Overrides, RunSettings
from tradeul_maint.run.stopping import Interrupted, StopSignals

DAY = "2026-11-25"


def settings_of(project, text: str):
    project.write_config(text)
    return load_settings(Overrides(config=project.config), env={})


def test_a_task_without_timeout_gets_the_default_and_timeout_0_means_none(project):
    settings = settings_of(project, '[[tasks]]\nname = "plain"\ncommand = ["true"]\n'
                                    '[[tasks]]\nname = "unbounded"\ncommand = ["true"]\ntimeout = 0\n'
                                    '[[tasks]]\nname = "unbounded_text"\ncommand = ["true"]\ntimeout = "0"\n'
                                    '[[tasks]]\nname = "own"\ncommand = ["true"]\ntimeout = "2h"\n')
    assert DEFAULT_TASK_TIMEOUT == 3600
    assert {t.name: t.timeout for t in settings.tasks} == {"plain": 3600, "unbounded": None, "unbounded_text": None,
                                                           "own": 7200}


@pytest.mark.parametrize("value, message", [
    ("-5", "[tasks.t] timeout = -5: must be a positive number of seconds"),
    ("nan", "[tasks.t] timeout = nan: must be a positive number of seconds"),  # TOML has nan and inf
    ("inf", "[tasks.t] timeout = inf: must be a positive number of seconds"),
    ("false", "[tasks.t] timeout = False: expected seconds"),
])
def test_a_timeout_that_is_not_a_duration_is_a_config_error(project, value, message):
    project.write_config(f'[[tasks]]\nname = "t"\ncommand = ["true"]\ntimeout = {value}\n')
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 78 and message in result.stderr


@pytest.mark.parametrize("key", ["max_run_minutes", "stop_grace_seconds", "retry_backoff_minutes"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_run_limit_that_is_not_a_finite_number_is_a_config_error(project, key, value):
    """Not silently no limit at all: nan compares false with everything, inf never comes."""
    project.write_config(f'[run]\n{key} = {value}\n[[tasks]]\nname = "t"\ncommand = ["true"]\n')
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 78
    assert f"[run] {key} = {value}: must be a finite number" in result.stderr


def test_max_run_minutes_defaults_to_240_and_0_turns_it_off(project):
    assert RunSettings().max_run_minutes == 240
    task = '[[tasks]]\nname = "t"\ncommand = ["true"]\n'
    assert settings_of(project, task).run.max_run_minutes == 240
    assert settings_of(project, "[run]\nmax_run_minutes = 0\n" + task).run.max_run_minutes is None
    assert settings_of(project, "[run]\nmax_run_minutes = 90.5\n" + task).run.max_run_minutes == 90.5
    project.write_config("[run]\nmax_run_minutes = -1\n" + task)
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 78 and "[run] max_run_minutes = -1: must be at least 0.01" in result.stderr


def test_the_first_of_a_signal_and_the_deadline_decides_why_the_run_stops():
    with StopSignals(max_run_minutes=1e-9) as stop:  # already past
        assert stop.requested and (stop.reason, stop.exit_code) == ("[run] max_run_minutes = 1e-09", 124)
        os.kill(os.getpid(), signal.SIGHUP)  # a signal while stopping changes nothing
        assert stop.reason == "[run] max_run_minutes = 1e-09"
        with pytest.raises(Interrupted) as raised:
            stop.check()
        assert (str(raised.value), raised.value.exit_code) == ("[run] max_run_minutes = 1e-09", EXIT_RUN_DEADLINE)
    with StopSignals(max_run_minutes=60) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGHUP)
        assert stop.requested and (stop.reason, stop.exit_code) == ("SIGHUP", EXIT_SIGHUP)
    with StopSignals(max_run_minutes=None) as stop:
        assert not stop.requested


@pytest.mark.slow
def test_a_run_past_max_run_minutes_stops_every_task_process_records_why_and_exits_124(project, r):
    # 6 seconds (for b to start on a loaded machine), while b and the child it leaves in a session of its own
    # would run for 10 minutes.
    grandchild = "sleep 6001"
    b = (f"import subprocess, time; subprocess.Popen(['sh', '-c', '{grandchild}'], start_new_session=True); "
         f"open(r'{project.root / 'b.started'}', 'w').write('{DAY}'); time.sleep(600)")
    project.write_config("[schedule]\nauto_recover = false\n[run]\nmax_run_minutes = 0.1\n"
                         + f'[[tasks]]\nname = "b"\ncommand = [{json.dumps(sys.executable)}, "-c", {json.dumps(b)}]\n'
                         + '[[tasks]]\nname = "c"\ncommand = ["true"]\nafter = ["b"]\n')
    runner = project.spawn("run", "--date", DAY)
    assert wait_for(lambda: count_runs(project.root, "b", "started") and processes_running(grandchild))
    assert runner.wait(60) == EXIT_RUN_DEADLINE
    _, err = runner.communicate()
    assert "stopped by [run] max_run_minutes = 0.1" in err
    doc = json.loads(r.get(f"maintenance:status:{DAY}"))
    assert doc["tasks"] == {"b": "failed", "c": "pending"}
    assert doc["task_details"]["b"]["error"] == "interrupted by [run] max_run_minutes = 0.1"
    assert doc["interrupted"] == "[run] max_run_minutes = 0.1" and doc["completed_at"] is None
    # Recorded only once nothing of b was left: neither its process nor the one it started in a session of its own.
    assert not processes_running(str(project.root / "marker.py")) and not processes_running(grandchild)
    assert r.get("maintenance:lock") is None
    shown = project.cli("status", "--date", DAY, "--now", "2026-11-25T18:00")
    assert "stopped by [run] max_run_minutes = 0.1" in shown.stdout
