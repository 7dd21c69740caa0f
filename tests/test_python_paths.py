"""`python` tasks import the same whatever the working directory: the installed tool run as cron runs it.

Cron starts a job in $HOME (or /) with an environment of a few variables and no terminal.
These tests run the console script by its absolute path from `cwd=/` under
`env -i PATH=/usr/bin:/bin HOME=<tmp>`, stdin from /dev/null and in a session of its own
(no controlling terminal), with every setting in the config file. A task module next to
the config file must import, and a package elsewhere must import through `[run] pythonpath`
(relative to the config file, not to the working directory).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CONSOLE_SCRIPT = Path(sys.executable).with_name("tradeul-maint")
SESSION = "2026-11-25"
IN_WINDOW = "2026-11-25T17:05"

JOBS = """\
def compute(ctx):
    ctx.redis.set("paths:compute:" + ctx.date.isoformat(), __file__)
"""
STEPS = """\
def publish(ctx):
    ctx.redis.set("paths:publish:" + ctx.date.isoformat(), __file__)
"""


def layout(root: Path, redis_url: str, pythonpath: str | None = '["../lib"]') -> Path:
    """etc/maint.toml with mytasks/ beside it, lib/otherpkg/ elsewhere, an empty home."""
    etc, lib = root / "etc", root / "lib"
    for package, module, text in ((etc / "mytasks", "jobs.py", JOBS), (lib / "otherpkg", "steps.py", STEPS)):
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / module).write_text(text)
    (root / "home").mkdir()
    run = f"pythonpath = {pythonpath}\n" if pythonpath else ""
    config = etc / "maint.toml"
    config.write_text(textwrap.dedent(f"""\
        [schedule]
        auto_recover = false
        [run]
        {run}
        [redis]
        url = "{redis_url}"
        [logging]
        dir = "{root / 'logs'}"

        [[tasks]]
        name = "compute"
        python = "mytasks.jobs:compute"

        [[tasks]]
        name = "publish"
        python = "otherpkg.steps:publish"
        after = ["compute"]
        """))
    return config


def cron(root: Path, *args: str) -> subprocess.CompletedProcess:
    """The console script as cron runs it: from /, a bare environment, no terminal."""
    assert CONSOLE_SCRIPT.is_file(), f"the tool is not installed as a console script next to {sys.executable}"
    return subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", f"HOME={root / 'home'}", str(CONSOLE_SCRIPT), *args],
                          cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                          start_new_session=True)


def test_cron_tick_from_root_imports_tasks_beside_the_config_and_on_pythonpath(tmp_path, redis_url, r):
    config = layout(tmp_path, redis_url)
    result = cron(tmp_path, "--config", str(config), "run", "--now", IN_WINDOW)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{SESSION}: 2/2 tasks completed in " + result.stdout.split(" in ")[1]
    assert r.get(f"paths:compute:{SESSION}") == str(tmp_path / "etc" / "mytasks" / "jobs.py")
    assert r.get(f"paths:publish:{SESSION}") == str(tmp_path / "lib" / "otherpkg" / "steps.py")
    assert json.loads(r.get(f"maintenance:status:{SESSION}"))["all_success"] is True
    # The default state directory came from HOME, as under cron.
    assert (tmp_path / "home" / ".local" / "state" / "tradeul-maint").is_dir()


def test_manual_run_from_root_with_config_from_the_environment(tmp_path, redis_url, r):
    config = layout(tmp_path, redis_url)
    result = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", f"HOME={tmp_path / 'home'}",
                             f"TRADEUL_MAINT_CONFIG={config}", str(CONSOLE_SCRIPT), "-q", "run", "--date", SESSION,
                             "--now", "2026-11-26T12:00"],
                            cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                            start_new_session=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert r.get(f"paths:publish:{SESSION}")


def test_without_pythonpath_the_package_elsewhere_fails_and_says_where_it_looked(tmp_path, redis_url, r):
    """The control: the package outside the config's directory is found only through [run] pythonpath."""
    config = layout(tmp_path, redis_url, pythonpath=None)
    result = cron(tmp_path, "--config", str(config), "run", "--now", IN_WINDOW)
    assert result.returncode == 1
    assert r.get(f"paths:compute:{SESSION}")  # beside the config file: found without any setting
    assert r.get(f"paths:publish:{SESSION}") is None
    failure = json.loads(r.get(f"maintenance:status:{SESSION}"))["task_details"]["publish"]["error"]
    assert "No module named 'otherpkg'" in failure and "[run] pythonpath" in failure
    assert str(tmp_path / "etc") in failure


@pytest.mark.parametrize("cwd", ["/", "home"])
def test_check_from_any_directory_imports_every_python_task(tmp_path, redis_url, r, cwd):
    config = layout(tmp_path, redis_url)
    result = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", f"HOME={tmp_path / 'home'}", str(CONSOLE_SCRIPT),
                             "--config", str(config), "check", "--now", IN_WINDOW],
                            cwd="/" if cwd == "/" else tmp_path / cwd, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120, start_new_session=True)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if " task " in line and ": python " in line]
    assert len(lines) == 2 and all(line.startswith("✓ ok") for line in lines), result.stdout
