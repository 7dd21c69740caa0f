"""A command line that explains itself: help, global options anywhere, configuration errors that say what to fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import marker_tasks
from tradeul_maint.cli.main import app
from tradeul_maint.cli.options import GLOBAL_OPTIONS

COMMANDS = ["run", "recover", "status", "calendar", "logs"]
NOON = "2026-11-30T12:00"


def help_text(*args: str) -> str:
    """The help as one line of words: rich's boxes and wrapping taken out."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stdout).split())


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_h_is_help_and_no_option_shows_a_bool_type(command):
    long = help_text(*command, "--help")
    assert help_text(*command, "-h") == long
    assert long.startswith("Usage: ") and "--help -h Show this message and exit" in long
    assert "<bool>" not in long and "bool" not in long.lower()


def test_every_global_option_says_its_environment_variable_and_default():
    text = help_text("-h")
    for option in GLOBAL_OPTIONS:
        assert option.help, option.name  # --state-dir and --log-dir too
        assert f"{option.help} [env var: {option.envvar}] [default: {option.default}]" in text
    assert "TRADEUL_MAINT_STATE_DIR" in text and "TRADEUL_MAINT_LOG_DIR" in text and "[default: off]" in text


def test_the_main_help_lists_the_exit_codes_and_where_the_config_is_looked_for():
    text = help_text("-h")
    assert ("Config file: --config, else TRADEUL_MAINT_CONFIG, else ./tradeul-maint.toml, else "
            "/etc/tradeul/maint.toml") in text
    for code, meaning in [("0", "done, or nothing to do"), ("1", "a task this command ran failed or was skipped"),
                          ("2", "bad usage"), ("69", "upgrade exchange-calendars"), ("70", "a bug"),
                          ("75", "temporary"), ("78", "configuration error"),
                          ("129/130/143", "stopped by SIGHUP/SIGINT/SIGTERM")]:
        assert re.search(rf"\b{re.escape(code)} [^0-9]*{re.escape(meaning)}", text), code


def test_each_command_help_says_global_options_may_follow_it():
    for command in COMMANDS:
        assert "go before or after the command" in help_text(command, "-h")


def test_global_options_are_read_after_the_command(project, r):
    project.write_config(marker_tasks(project.root, ["a"]))
    other = project.root / "other.toml"
    other.write_text(marker_tasks(project.root, ["x", "y"]))
    before = project.cli("--config", str(other), "status", "--json", "--lookback", "1", "--now", NOON)
    after = project.cli("status", "--json", "--config", str(other), "--lookback", "1", "--now", NOON)
    assert before.exit_code == after.exit_code == 0, after.output
    assert json.loads(before.stdout)["sessions"] == json.loads(after.stdout)["sessions"]
    assert json.loads(after.stdout)["sessions"][0]["tasks_total"] == 2  # other.toml's, not the project's

    run = project.cli("run", "--date", "2026-11-27", "-q", "--config", str(other), "--now", NOON)
    assert run.exit_code == 0 and run.stdout == ""  # -q after the command silences the summary too
    assert r.exists("maintenance:executed:2026-11-27")

    missing = project.cli("run", "--config")
    assert missing.exit_code == 2 and "Option '--config' requires an argument" in missing.stderr
    version = project.cli("status", "--version")
    assert version.exit_code == 0 and version.stdout.startswith("tradeul-maint ")


# --- configuration errors ----------------------------------------------------------------------


def one_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


def test_no_config_found_lists_the_paths_searched(project):
    if Path("/etc/tradeul/maint.toml").exists():
        pytest.skip("/etc/tradeul/maint.toml exists on this machine")
    line = one_line(project.cli("run", "--now", NOON, TRADEUL_MAINT_CONFIG=""), 78)
    assert line == (f"tradeul-maint: no config file found (looked for {project.root / 'tradeul-maint.toml'}, "
                    "/etc/tradeul/maint.toml): write one there, or give --config PATH or TRADEUL_MAINT_CONFIG")


def test_a_config_path_that_is_a_directory_says_so(project):
    line = one_line(project.cli("--config", str(project.root), "run", "--now", NOON), 78)
    assert line == (f"tradeul-maint: --config {project.root} is a directory: give the config file itself "
                    f"(e.g. {project.root / 'maint.toml'})")
    line = one_line(project.cli("status", TRADEUL_MAINT_CONFIG=str(project.root)), 78)
    assert line.startswith(f"tradeul-maint: TRADEUL_MAINT_CONFIG={project.root} is a directory")


@pytest.mark.parametrize("command", [["run"], ["status"], ["recover", "--dry-run"], ["calendar"]])
def test_a_bad_now_in_the_environment_names_the_variable(project, command):
    project.write_config(marker_tasks(project.root, ["a"]))
    line = one_line(project.cli(*command, TRADEUL_MAINT_NOW="garbage"), 2)
    assert line.startswith("tradeul-maint: TRADEUL_MAINT_NOW='garbage' in the environment: expected an ISO 8601")
    line = one_line(project.cli(*command, "--now", "garbage"), 2)
    assert line.startswith("tradeul-maint: --now 'garbage': expected an ISO 8601")


def test_an_unknown_key_in_a_task_names_the_task(project):
    project.write_config('[[tasks]]\nname = "compute"\npyhton = "m:f"\n')
    line = one_line(project.cli("run", "--now", NOON), 78)
    assert "unknown key 'pyhton' in task 'compute' (known: " in line
    project.write_config('[[tasks]]\nname = "a"\ncommand = ["true"]\n[[tasks]]\ncomand = ["true"]\n')
    assert "unknown key 'comand' in task #2" in one_line(project.cli("run", "--now", NOON), 78)


@pytest.mark.parametrize("setting, message", [
    ("[run]\nslow_factor = 0.5\n", "[run] slow_factor = 0.5: must be at least 1"),
    ("[run]\nslow_factor = 'twice'\n", "[run] slow_factor = 'twice': expected a number"),
    ("[schedule]\ndeadline_minutes = 0\n", "[schedule] deadline_minutes = 0: must be at least 1"),
])
def test_trend_settings_are_checked(project, setting, message):
    project.write_config(setting + marker_tasks(project.root, ["a"]))
    assert message in one_line(project.cli("status", "--now", NOON), 78)


def test_rerunning_one_task_that_completes_exits_0_and_says_what_is_left(project, r):
    project.write_config(marker_tasks(project.root, ["a", "b", "c"], fail=("b",)))
    first = project.cli("run", "--date", "2026-11-27", "--now", NOON)
    assert first.exit_code == 1 and "b failed" in first.stderr
    again = project.cli("run", "--date", "2026-11-27", "--task", "a", "--now", NOON)
    assert again.exit_code == 0, again.output
    assert re.fullmatch(r"2026-11-27: 2/3 tasks completed in \d+\.\ds; the session is not done yet, "
                        r"left: b \(failed\)\n", again.stdout)
    assert again.stderr == "" and not r.exists("maintenance:executed:2026-11-27")
    failing = project.cli("run", "--date", "2026-11-27", "--task", "b", "--now", NOON)
    assert failing.exit_code == 1 and "  b failed: " in failing.stderr  # a task this command ran failed
