"""`--version`, and Typer's shell completion, which must leave the cron tick alone.

Completion works by running the tool with `_TRADEUL_MAINT_COMPLETE` set and no arguments
(the words typed so far are in COMP_WORDS), so the quick path of cli/main.py, which reads only
`run` command lines, hands it to typer; a plain tick still never loads typer.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

CONSOLE_SCRIPT = Path(sys.executable).with_name("tradeul-maint")


def tool(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CONSOLE_SCRIPT), *args], env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env},
                          cwd="/", capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("argv", [[str(CONSOLE_SCRIPT)], [sys.executable, "-m", "tradeul_maint"]])
def test_version_prints_the_installed_version(argv):
    result = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"tradeul-maint {metadata.version('tradeul-maint')}"
                                                                    "\n", "")


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o default -F _tradeul_maint_completion tradeul-maint"),
                                           ("zsh", "#compdef tradeul-maint"),
                                           ("fish", "complete --command tradeul-maint")])
def test_the_completion_script_for_each_shell(shell, marker):
    result = tool(_TRADEUL_MAINT_COMPLETE=f"source_{shell}")
    assert result.returncode == 0 and marker in result.stdout


@pytest.mark.parametrize("words, cword, expected", [
    ("tradeul-maint st", "1", ["status"]),
    ("tradeul-maint ch", "1", ["check"]),
    ("tradeul-maint run --d", "2", ["--date", "--dry-run"]),
    ("tradeul-maint --config x.toml status --", "4", ["--date", "--lookback", "--json", "--check", "--now"]),
])
def test_bash_completion_completes_commands_and_options(words, cword, expected):
    result = tool(_TRADEUL_MAINT_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=cword)
    assert result.returncode == 0, result.stderr
    offered = result.stdout.split()
    assert set(expected) <= set(offered)
    prefix = words.rsplit(" ", 1)[-1]
    assert all(word.startswith(prefix) for word in offered)


def test_the_completion_options_are_offered_but_the_tick_still_skips_typer(tmp_path):
    assert "--install-completion" in tool("--help").stdout
    from tradeul_maint.cli import main as cli

    assert cli.parse_tick(["-q", "run"], {"_TRADEUL_MAINT_COMPLETE": "complete_bash"}) is not None
    assert cli.parse_tick(["--install-completion"], {}) is None  # typer's own options go to typer


TASKS_CONFIG = """
[[tasks]]
name = "load_ohlc"
command = ["true"]

[[tasks]]
name = "load_volume"
command = ["true"]

[[tasks]]
name = "calculate_atr"
command = ["true"]
"""


@pytest.mark.parametrize("words, cword, env, expected", [
    ("tradeul-maint --config {config} run --date 2026-11-25 --task lo", "7", {}, ["load_ohlc", "load_volume"]),
    ("tradeul-maint status --task ", "3", {"TRADEUL_MAINT_CONFIG": "{config}"},
     ["load_ohlc", "load_volume", "calculate_atr"]),
    ("tradeul-maint logs --task c", "3", {"TRADEUL_MAINT_CONFIG": "{config}"}, ["calculate_atr"]),
    ("tradeul-maint --config /nonexistent/x.toml run --task ", "5", {}, []),  # nothing to offer, and no error
])
def test_task_names_complete_after_task_from_the_config(tmp_path, words, cword, env, expected):
    config = tmp_path / "maint.toml"
    config.write_text(TASKS_CONFIG)
    env = {k: v.format(config=config) for k, v in env.items()}
    result = tool(_TRADEUL_MAINT_COMPLETE="complete_bash", COMP_WORDS=words.format(config=config), COMP_CWORD=cword,
                  **env)
    assert (result.returncode, result.stdout.split(), result.stderr) == (0, expected, "")
