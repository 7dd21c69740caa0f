"""The console script's entry point: a cron tick with nothing to do ends here, before typer is loaded.

Cron calls `tradeul-maint run` every few minutes, and nearly every call has nothing to do.
Loading typer costs more than such a tick may: a typer app that declares these options
and does nothing takes 1.6x `python -c "import redis"` (typer, click, and the pydantic
typer parses option values with; bench/bench_tick.py measures it), against 1.5x for the
whole tick. So `main` first reads the command line itself, for one shape only: the global
options (before or after the command), `run`, and `--now`. For that shape it asks `core.quiet_tick` whether the
run would do nothing and log nothing, and if so exits 0 at once, having printed and
written nothing. Every other invocation, and this one whenever the answer is not a plain
"nothing" (work to do, an error, a warning to log, a value it does not take), goes to the
typer app in cli/commands.py, which decides again from scratch: the quick path can only spare
a silent exit 0, never change an outcome. The one error it reports itself is Redis being
unreachable, in the same line and with the same exit code as cli/commands.py, so that cron
does not wait for the connection timeout twice.

The flags are declared once, in cli/options.py, which both this module and cli/commands.py import.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tradeul_maint.base.errors import EXIT_SIGINT
from tradeul_maint.cli.options import GLOBAL_OPTIONS, NOW_ENVVAR, NOW_FLAG, error_line, hoist


@dataclass(frozen=True)
class Tick:
    """A plain cron-mode `run`: the global options and `--now`, nothing else."""

    config: Path | None = None
    redis_url: str | None = None
    state_dir: Path | None = None
    log_dir: Path | None = None
    quiet: bool = False
    now: str | None = None


def parse_tick(argv: list[str], environ: Mapping[str, str]) -> Tick | None:
    """`argv` as a plain cron tick, or None when it is anything else (typer parses it then).

    Global options after `run` are put in front of it first, as the typer app does (`hoist`).
    Only what typer would read the same way is taken: each option once, a value that is not
    empty and does not start with '-', `--opt value` or `--opt=value`. `-v` is refused too:
    a verbose tick prints its debug lines, so cli/commands.py runs it.
    """
    flags = {flag: option.name for option in GLOBAL_OPTIONS for flag in option.flags}
    switches = {option.name for option in GLOBAL_OPTIONS if option.switch}
    values: dict[str, str | bool] = {}
    command = None
    try:
        args = hoist(argv, lambda command: (NOW_FLAG,) if command == "run" else ())
    except ValueError:
        return None
    while args:
        arg = args.pop(0)
        if command is None and arg == "run":
            command = arg
            continue
        flag, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        name = flags.get(flag) if command is None else ("now" if flag == NOW_FLAG else None)
        if name is None or name in values:
            return None
        if name in switches:
            if eq:
                return None
            values[name] = True
            continue
        if not eq:
            if not args:
                return None
            value = args.pop(0)
        if not value or value.startswith("-"):
            return None
        values[name] = value
    if command is None or values.get("verbose"):
        return None
    path = {k: Path(v) for k, v in values.items() if k in ("config", "state_dir", "log_dir")}
    return Tick(redis_url=values.get("redis_url"), quiet=bool(values.get("quiet")),
                now=values.get("now") or environ.get(NOW_ENVVAR) or None, **path)


def quiet_tick(tick: Tick) -> bool:
    """True when this tick has nothing to do and nothing to say; False sends it to cli/commands.py.

    The steps of `commands.run` in cron mode, in its order: settings, the log directory
    (a directory it cannot write is exit 78 there), then `core.quiet_tick` for the plan.
    """
    from tradeul_maint.base.errors import RedisUnavailableError
    from tradeul_maint.config.logs import choose_log_dir, fallback_log_dir, log_dir_for
    from tradeul_maint.config.load import load_settings
    from tradeul_maint.config.settings import Overrides
    from tradeul_maint.core import actions as core

    try:
        settings = load_settings(Overrides(tick.config, tick.redis_url, tick.state_dir, tick.log_dir))
        choose_log_dir(log_dir_for(settings), fallback_log_dir(settings))
        return core.quiet_tick(settings, tick.now)
    except RedisUnavailableError as exc:
        sys.stderr.write(error_line(exc) + "\n")
        raise SystemExit(exc.exit_code) from None
    except Exception:  # whatever it is, cli/commands.py reports it properly
        return False


def main() -> None:
    tick = parse_tick(sys.argv[1:], os.environ)
    try:
        if tick is not None and quiet_tick(tick):
            return
    except KeyboardInterrupt:
        raise SystemExit(EXIT_SIGINT) from None
    from tradeul_maint.cli.commands import app

    app(prog_name="tradeul-maint")


def __getattr__(name: str):
    """`app`, the typer app, loaded from cli/commands.py on first use (tests and benchmarks invoke it)."""
    if name == "app":
        from tradeul_maint.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
