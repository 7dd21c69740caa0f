"""A project the tool runs against: a config file, state and log directories, and the environment naming them.

One helper for the tests (conftest.py's `project` fixture) and the fault trials
(bench/faults.py's Workspace), so both run the tool the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from tradeul_maint.base import envvars

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Project:
    """A config file, state and log directories, and the environment to run the tool against them."""

    root: Path
    redis_url: str | None

    @property
    def config(self) -> Path:
        return self.root / "tradeul-maint.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def write_config(self, text: str) -> Path:
        self.config.write_text(textwrap.dedent(text))
        return self.config

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in envvars.READ | envvars.SET_FOR_TASKS}
        env.update({envvars.CONFIG: str(self.config), envvars.STATE_DIR: str(self.state_dir),
                    envvars.LOG_DIR: str(self.log_dir),
                    # Task modules: the project's own directory, and tests/ (modules referenced as test_x:callable).
                    "PYTHONPATH": os.pathsep.join((str(self.root), str(REPO / "tests")))})
        if self.redis_url:
            env[envvars.REDIS_URL] = self.redis_url
        env.update(extra)
        return env

    def cli(self, *args: str, **env: str):
        """Run the CLI in process (fast); returns click's Result with exit_code, stdout, stderr."""
        from typer.testing import CliRunner

        from tradeul_maint.cli.commands import app

        return CliRunner().invoke(app, list(args), env=self.env(**env), catch_exceptions=False)

    def spawn(self, *args: str, **env: str) -> subprocess.Popen:
        """Run the CLI in a subprocess (signals, concurrency, crashes)."""
        return subprocess.Popen([sys.executable, "-m", "tradeul_maint", *args], env=self.env(**env),
                                cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tradeul_maint", *args], env=self.env(**env), cwd=self.root,
                              capture_output=True, text=True, timeout=timeout)
