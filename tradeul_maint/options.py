"""The command line's shared vocabulary: the global options, `--now`, and the one-line error form.

Two parsers read the same command lines: cli.py's quick one, which answers the cron tick
with nothing to do before typer is loaded, and the typer app in commands.py, which does
everything else. Both take their flags from here, so they cannot drift apart. This module
is on the tick's path: plain values only, no typer, no rich, no loguru.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GlobalOption:
    """An option every command takes, before or after the command's name."""

    name: str  # its parameter name in commands.py
    flags: tuple[str, ...]
    metavar: str | None  # None: a switch, which takes no value
    help: str

    @property
    def switch(self) -> bool:
        return self.metavar is None


GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption("config", ("--config",), "PATH", "Config file (TOML)."),
    GlobalOption("redis_url", ("--redis-url",), "URL", "Redis URL; none anywhere: the embedded Redis."),
    GlobalOption("state_dir", ("--state-dir",), "PATH", ""),
    GlobalOption("log_dir", ("--log-dir",), "PATH", ""),
    GlobalOption("verbose", ("-v", "--verbose"), None, "Debug output and tracebacks."),
    GlobalOption("quiet", ("-q", "--quiet"), None, "Only errors."),
)
OPTIONS_BY_NAME = {option.name: option for option in GLOBAL_OPTIONS}
NOW_FLAG, NOW_ENVVAR = "--now", "TRADEUL_MAINT_NOW"


def error_line(exc: BaseException) -> str:
    """How the tool reports an error an operator can act on: one line, no secrets."""
    from tradeul_maint.logs import scrub

    return f"tradeul-maint: {scrub(str(exc))}"
