"""Configuration: precedence, and every configuration error is exit 78 with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradeul_maint.errors import ConfigError
from tradeul_maint.settings import Overrides, load_settings

TASK = '[[tasks]]\nname = "a"\ncommand = ["true"]\n'


@pytest.mark.parametrize(
    "config, expected",
    [
        ("[schedule\n" + TASK, "not valid TOML"),
        ("[schedule]\ncolour = 'blue'\n" + TASK, "unknown key 'colour' in [schedule]"),
        ("surprise = 1\n" + TASK, "unknown key 'surprise' at top level"),
        (TASK + "flavour = 'x'\n", "unknown key 'flavour' in task 'a'"),
        ("", "no tasks configured"),
        (TASK + TASK, "duplicate task name 'a'"),
        (TASK + 'after = ["ghost"]\n', "unknown task 'ghost'"),
        ('[[tasks]]\nname = "a"\ncommand = ["true"]\nafter = ["b"]\n'
         '[[tasks]]\nname = "b"\ncommand = ["true"]\nafter = ["a"]\n', "dependency cycle: a -> b -> a"),
        ('[[tasks]]\nname = "a"\ncommand = ["true"]\nafter = ["a"]\n', "depends on itself"),
        ("[schedule]\nwindow_start = '25:00'\n" + TASK, "window_start = '25:00'"),
        ("[schedule]\nwindow_start = 'close+sixty'\n" + TASK, "window_start"),
        ("[schedule]\nwindow_minutes = 0\n" + TASK, "window_minutes = 0"),
        ("[schedule]\nwindow_minutes = 'long'\n" + TASK, "window_minutes = 'long': expected an integer"),
        ("[schedule]\ncalendar = 'NOPE'\n" + TASK, "'NOPE' is not an exchange-calendars code"),
        ("[schedule]\nlookback_sessions = 7\n[redis]\nstatus_ttl_days = 9\n" + TASK,
         "status_ttl_days = 9 is shorter"),
        ("[run]\nmax_parallel = 0\n" + TASK, "max_parallel = 0"),
        ("[run]\ncontainment = 'cgroup'\n" + TASK, '[run] containment = "cgroup": expected "auto"'),
        ("[schedule]\nauto_recover = 'yes'\n" + TASK, "auto_recover = 'yes': expected true or false"),
        ("[run]\nmax_attempts = true\n" + TASK, "[run] max_attempts = true: expected an integer"),
        ("[run]\nslow_factor = false\n" + TASK, "[run] slow_factor = false: expected a number"),
        ("[run]\nslow_min_seconds = -1\n" + TASK, "[run] slow_min_seconds = -1: must be at least 0"),
        ("[run]\nslow_min_seconds = '5s'\n" + TASK, "[run] slow_min_seconds = '5s': expected a number"),
        (TASK + 'after = "b"\n', "[tasks.a] after = 'b': expected an array"),
        (TASK + "params = 5\n", "[tasks.a] params = 5: expected a table"),
        ('[[tasks]]\nname = "Bad Name"\ncommand = ["true"]\n', "name = 'Bad Name'"),
        ('[[tasks]]\nname = "a"\n', "needs exactly one of command, python or builtin"),
        ('[[tasks]]\nname = "a"\ncommand = ["true"]\npython = "m:f"\n', "needs exactly one of"),
        ('[[tasks]]\nname = "a"\ncommand = []\n', "command must be a non-empty list"),
        ('[[tasks]]\nname = "a"\npython = "no_colon"\n', "expected \"package.module:callable\""),
        ('[[tasks]]\nname = "a"\nbuiltin = "redis.nope"\n', "unknown built-in"),
        ('[[tasks]]\nname = "a"\nbuiltin = "redis.delete_keys"\nparams = { pattern = "x*" }\n',
         "params.pattern: unknown parameter"),
        (TASK + "timeout = '10 years'\n", "timeout = '10 years'"),
        (TASK + "retries = -1\n", "retries = -1"),
        (TASK + "market_closed_only = 'yes'\n", "[tasks.a] market_closed_only = 'yes': expected true or false"),
        (TASK + "catchup = 'newest'\n", "[tasks.a] catchup = 'newest': expected \"all\" or \"latest\""),
        ("[logging]\nlevel = 'LOUD'\n" + TASK, "level = 'LOUD'"),
        ("[logging]\nrotation = 'huge'\n" + TASK, "rotation = 'huge'"),
        ("[calendar]\nclosed = ['2025-13-45']\n" + TASK, "expected a date"),
        ("[calendar]\nearly_closes = { 2026-12-24 = '1pm' }\n" + TASK, "expected a local time"),
        ("[calendar]\nearly_closes = { 2026-12-26 = '13:00' }\n" + TASK, "2026-12-26 is not a session of XNYS (a Saturday)"),
        ("[redis]\nurl = 'http://localhost'\n" + TASK, "expected redis://"),
        ('[[tasks]]\nname = "a"\nbuiltin = "redis.delete_keys"\nparams = { patterns = ["main*"] }\n',
         "'main*' would delete this tool's own state"),
    ],
)
def test_configuration_errors_exit_78_with_one_line(project, config, expected):
    project.write_config(config)
    env = {"TRADEUL_MAINT_REDIS_URL": ""} if "url" in config else {}
    result = project.cli("run", "--now", "2026-11-27T17:05", **env)
    assert result.exit_code == 78, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.output


def test_configuration_error_names_the_file(project):
    project.write_config("[schedule]\ncolour = 1\n" + TASK)
    result = project.cli("run")
    assert str(project.config) in result.stderr


def test_missing_config_file_is_a_configuration_error(project):
    result = project.cli("--config", str(project.root / "absent.toml"), "run")
    assert result.exit_code == 78
    assert "absent.toml does not exist" in result.stderr


def test_verbose_shows_the_traceback(project):
    project.write_config("[schedule]\ncolour = 1\n" + TASK)
    result = project.cli("-v", "run")
    assert result.exit_code == 78
    assert "Traceback" in result.stderr


def test_precedence_cli_over_env_over_file_over_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text("[redis]\nurl = 'redis://file:1/0'\n" + TASK)
    base = {"TRADEUL_MAINT_CONFIG": str(config), "HOME": str(tmp_path)}
    assert load_settings(Overrides(), base).redis.url == "redis://file:1/0"
    assert load_settings(Overrides(), {**base, "REDIS_URL": "redis://generic:1/0"}).redis.url == \
        "redis://generic:1/0"
    env = {**base, "REDIS_URL": "redis://generic:1/0", "TRADEUL_MAINT_REDIS_URL": "redis://env:1/0"}
    assert load_settings(Overrides(), env).redis.url == "redis://env:1/0"
    assert load_settings(Overrides(redis_url="redis://cli:1/0"), env).redis.url == "redis://cli:1/0"
    defaults = load_settings(Overrides(), base)
    assert defaults.schedule.window_minutes == 30 and defaults.redis.key_prefix == "maintenance"
    assert defaults.state_dir == tmp_path / ".local" / "state" / "tradeul-maint"
    assert load_settings(Overrides(), {**base, "XDG_STATE_HOME": "/x"}).state_dir == Path("/x/tradeul-maint")


def test_config_file_found_in_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tradeul-maint.toml").write_text("[schedule]\nwindow_minutes = 45\n" + TASK)
    assert load_settings(Overrides(), {"HOME": str(tmp_path)}).schedule.window_minutes == 45


def test_durations_and_window_forms_parse(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[schedule]\nwindow_start = 'close+2h'\n" + TASK + "timeout = '30m'\nretry_delay = 5\n")
    settings = load_settings(Overrides(config=config), {"HOME": str(tmp_path)})
    assert str(settings.schedule.window_start) == "close+2h"
    assert settings.tasks[0].timeout == 1800 and settings.tasks[0].retry_delay == 5


def test_settings_error_is_a_config_error(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(TASK + TASK)
    with pytest.raises(ConfigError, match="duplicate"):
        load_settings(Overrides(config=config), {"HOME": str(tmp_path)})
