"""The command line's shared vocabulary: the global options, `--now`, and the one-line error form.

Two parsers read the same command lines: cli/main.py's quick one, which answers the cron tick
with nothing to do before typer is loaded, and the typer app in cli/commands.py, which does
everything else. Both take their flags from here and both put global options given after
the command back in front of it with `hoist`, so they cannot read a command line two ways.
This module is on the tick's path: plain values only, no typer, no rich, no loguru.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from tradeul_maint.base import envvars


@dataclass(frozen=True)
class GlobalOption:
    """An option every command takes, before or after the command's name."""

    name: str  # its parameter name in cli/commands.py
    flags: tuple[str, ...]
    metavar: str | None  # None: a switch, which takes no value
    help: str
    envvar: str  # as the help shows it; config/settings.py reads the variables
    default: str  # as the help shows it

    @property
    def switch(self) -> bool:
        return self.metavar is None


GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption("config", ("--config",), "PATH", "Config file (TOML).", envvars.CONFIG,
                 "./tradeul-maint.toml, else /etc/tradeul/maint.toml"),
    GlobalOption("redis_url", ("--redis-url",), "URL",
                 "Redis URL: redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://; the password "
                 "is never shown.",
                 f"{envvars.REDIS_URL}, then {envvars.GENERIC_REDIS_URL}",
                 "[redis] url, else the embedded Redis in <state-dir>/redis"),
    GlobalOption("state_dir", ("--state-dir",), "PATH",
                 "Where the calendar cache, the embedded Redis's data and the fallback logs live.",
                 envvars.STATE_DIR, "$XDG_STATE_HOME/tradeul-maint, i.e. ~/.local/state/tradeul-maint"),
    GlobalOption("log_dir", ("--log-dir",), "PATH", "Where maintenance.log and maintenance_errors.log are written.",
                 envvars.LOG_DIR, "[logging] dir, else /var/log/tradeul; <state-dir>/logs when "
                                          "that is not writable"),
    GlobalOption("verbose", ("-v", "--verbose"), None, "Debug output on stderr, and tracebacks.", "none", "off"),
    GlobalOption("quiet", ("-q", "--quiet"), None,
                 "Only errors on stderr: no summary of sessions that succeeded, no live view.", "none", "off"),
)
OPTIONS_BY_NAME = {option.name: option for option in GLOBAL_OPTIONS}
VERSION_FLAG = "--version"  # global too, but never part of a cron tick
NOW_FLAG, NOW_ENVVAR = "--now", envvars.NOW


def hoist(argv: list[str], value_flags: Callable[[str], Collection[str]] = lambda command: ()) -> list[str]:
    """`argv` with the global options given after the command moved in front of it, in their order.

    `tradeul-maint run --config X` is what people type; both parsers read it as
    `tradeul-maint --config X run`. Before the command, a global option's value is skipped
    over (a config file may be called `run`); after it, the command's own options that take
    a value keep it (`value_flags(command)`: `logs --task -q` asks for a task named `-q`),
    and everything after `--` stays where it is. A cluster of global switches (`-qv`) moves too.
    A global option at the very end that needs a value has none: ValueError, a usage error.
    """
    flags = {flag: option for option in GLOBAL_OPTIONS for flag in option.flags}
    shorts = {flag[1] for flag, option in flags.items() if option.switch and len(flag) == 2}
    i = 0
    while i < len(argv) and argv[i] != "--" and argv[i].startswith("-"):
        option = flags.get(argv[i].partition("=")[0])
        i += 2 if option is not None and not option.switch and "=" not in argv[i] else 1
    if i >= len(argv) or argv[i] == "--":
        return list(argv)
    command, rest = argv[i], argv[i + 1:]
    keep = set(value_flags(command))
    moved: list[str] = []
    kept: list[str] = []
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg == "--":
            kept += rest[j:]
            break
        name, eq, _ = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        option = flags.get(name) or (VERSION_FLAG if arg == VERSION_FLAG else None)
        cluster = len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and set(arg[1:]) <= shorts
        takes = name in keep or (isinstance(option, GlobalOption) and not option.switch)
        if takes and not eq and j + 1 == len(rest) and isinstance(option, GlobalOption):
            raise ValueError(f"Option '{arg}' requires an argument.")
        target = moved if option is not None or cluster else kept
        target.append(arg)
        if takes and not eq and j + 1 < len(rest):
            target.append(rest[j + 1])
            j += 1
        j += 1
    return argv[:i] + moved + [command] + kept


def error_line(exc: BaseException) -> str:
    """How the tool reports an error an operator can act on: one line, no secrets."""
    from tradeul_maint.base.redact import scrub

    return f"tradeul-maint: {scrub(str(exc))}"
