"""What every command shares: options, completion, the global options, exit codes.

The click classes that read a command line as the quick tick does, each option declared once (an
Annotated alias), shell completion of task and job names, the global options a command carries, and
the one place exceptions become exit codes.
"""

from __future__ import annotations

import datetime as dt
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Iterator, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from tradeul_maint.base.errors import (EXIT_CALENDAR_EXPIRED, EXIT_CONFIG, EXIT_INTERNAL, EXIT_OK, EXIT_SIGINT,
                                       EXIT_TASKS_FAILED, EXIT_TEMPORARY, EXIT_USAGE, MaintError, UsageError)
from tradeul_maint.base.redact import scrub, scrubbed_traceback
from tradeul_maint.cli import render
from tradeul_maint.cli.options import NOW_ENVVAR, NOW_FLAG, error_line, hoist
from tradeul_maint.config.load import load_settings
from tradeul_maint.config.logs import configure_logging, log_dir_for
from tradeul_maint.config.settings import Overrides, Settings
from tradeul_maint.run.stopping import Interrupted
from tradeul_maint.view.sources import LogPlace


COMMAND_EPILOG = ("Global options (--config, --redis-url, --state-dir, --log-dir, -v, -q) go before or after "
                  "the command: see tradeul-maint -h.")


def _no_bool_metavar(option):
    """click's own --help switch would show as `<bool>` in typer's help: switches take no value."""
    if option is not None and option.metavar is None:
        option.metavar = ""
    return option


class Command(TyperCommand):
    """Every command: says that global options may follow it, and shows no `<bool>` for -h."""

    def __init__(self, *args, **kwargs):
        kwargs["epilog"] = kwargs.get("epilog") or COMMAND_EPILOG
        super().__init__(*args, **kwargs)

    def get_help_option(self, ctx):
        return _no_bool_metavar(super().get_help_option(ctx))


class Group(TyperGroup):
    """The app: global options are read after the command's name too, as cli/main.py's quick parser reads them."""

    def get_help_option(self, ctx):
        return _no_bool_metavar(super().get_help_option(ctx))

    def get_params(self, ctx):
        """Typer's --install-completion and --show-completion are switches too: no `<bool>` for them either."""
        return [_no_bool_metavar(p) if p.name in ("install_completion", "show_completion") else p
                for p in super().get_params(ctx)]

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Bad usage is one line on stderr and exit 2, like every other error (typer would draw a box).

        click's errors (an unknown option, a value out of range) reach here raised, since the
        command line runs in click's non-standalone mode; everything else keeps its behaviour.
        """
        argv = sys.argv[1:] if args is None else list(args)
        if not standalone_mode or not argv:  # no arguments: the help, as typer shows it
            return super().main(args, prog_name, complete_var, standalone_mode=standalone_mode, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except Exception as exc:
            if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
                raise
            where = getattr(getattr(exc, "ctx", None), "command_path", None)
            hint = f" (see '{where} -h')" if where else ""
            sys.stderr.write(f"tradeul-maint: {exc.format_message()}{hint}\n")
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        try:
            args = hoist(args, self._value_flags)
        except ValueError as exc:
            ctx.fail(str(exc))
        return super().parse_args(ctx, args)

    def _value_flags(self, name: str) -> list[str]:
        """The command's options that take a value: theirs stays theirs even when it looks like a global flag."""
        command = self.commands.get(name)
        return [flag for param in (command.params if command else ()) if not getattr(param, "is_flag", True)
                for flag in param.opts]


out = render.out
err = render.err


def Switch(*flags: str, help: str):  # noqa: N802 - reads like typer.Option, which it wraps
    """A flag without a value; shown without a `<bool>` type in the help."""
    return typer.Option(*flags, metavar="", help=help)


NowOption = Annotated[Optional[str], typer.Option(
    NOW_FLAG, envvar=NOW_ENVVAR, metavar="TIMESTAMP",
    help="Behave as if this were the current time (ISO 8601; a naive time is exchange-local).")]
DateOption = Annotated[Optional[str], typer.Option("--date", metavar="YYYY-MM-DD", help="One session.")]
DryRunOption = Annotated[bool, Switch("--dry-run", help="Print the plan and change nothing.")]
ForceOption = Annotated[bool, Switch("--force", help="Run sessions that are already done too.")]
SinceOption = Annotated[Optional[str], typer.Option(
    "--since", metavar="YYYY-MM-DD", help="The sessions from this date (instead of the lookback)...")]
UntilOption = Annotated[Optional[str], typer.Option("--until", metavar="YYYY-MM-DD",
                                                    help="...to this date (default: today).")]


def complete_task(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion after --task: the task names of the config file the command line (or the environment)
    names. Anything wrong (no config, a bad one) offers nothing: completion must never print an error."""
    try:
        config = ctx.find_root().params.get("config")
        settings = load_settings(Overrides(config=config), require_tasks=False)
    except Exception:  # noqa: BLE001 - a half-typed command line is not an error to report
        return []
    names = dict.fromkeys(t.name for job in settings.jobs for t in job.tasks)
    return [name for name in names if name.startswith(incomplete)]


def complete_job(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion after --job: the jobs of the config file, as complete_task finds it; silent on any error."""
    try:
        config = ctx.find_root().params.get("config")
        settings = load_settings(Overrides(config=config), require_tasks=False)
    except Exception:  # noqa: BLE001 - a half-typed command line is not an error to report
        return []
    return [job.name for job in settings.jobs if job.name.startswith(incomplete)]


JobOption = Annotated[Optional[list[str]], typer.Option(
    "--job", metavar="NAME", autocompletion=complete_job,
    help="Only this job (repeatable; the top-level [[tasks]] are the job 'maintenance'). Default: every job.")]
# The worst of several jobs' exit codes is the command's: a config error over a temporary one over a task failure.
SEVERITY = (EXIT_OK, EXIT_TASKS_FAILED, EXIT_TEMPORARY, EXIT_USAGE, EXIT_CALENDAR_EXPIRED, EXIT_CONFIG, EXIT_INTERNAL)


def worst(codes: list[int]) -> int:
    return max(codes, key=lambda code: SEVERITY.index(code) if code in SEVERITY else len(SEVERITY), default=EXIT_OK)


def job_label(settings: Settings, job: str) -> str:
    """`premarket: ` before each line about a job when the config has several; nothing with one (as ever)."""
    return f"{job}: " if len(settings.jobs) > 1 else ""


LookbackOption = Annotated[Optional[int], typer.Option(
    "--lookback", metavar="N", min=1, help="How many sessions back, today's included (default: lookback_sessions).")]


@dataclass
class Globals:
    overrides: Overrides
    verbose: bool
    quiet: bool
    log_dir: LogPlace | None = None  # where this command's log entries go, once settings are loaded

    def settings(self, require_tasks: bool = True, log_files: bool = True) -> Settings:
        settings = load_settings(self.overrides, require_tasks=require_tasks)
        chosen = configure_logging(settings, self.verbose, self.quiet, files=log_files)
        if chosen is not None:
            self.log_dir = LogPlace(chosen.path, log_dir_for(settings), chosen.fallback_reason)
        return settings

    def warn(self, message: str | None) -> None:
        """A warning a person should see, on stderr (stdout may be JSON or a --check line), unless -q."""
        if message and not self.quiet:
            err.print(f"tradeul-maint: warning: {message}", markup=False, emoji=False)


@contextmanager
def errors_to_exit_codes(g: Globals) -> Iterator[None]:
    try:
        yield
    except MaintError as exc:
        if g.verbose:
            sys.stderr.write(scrubbed_traceback())
        err.print(error_line(exc), markup=False, emoji=False)
        raise typer.Exit(exc.exit_code) from None
    except Interrupted as exc:
        err.print(f"tradeul-maint: stopped by {exc}; the interrupted task is recorded as not completed",
                  markup=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_SIGINT) from None
    except Exception as exc:  # a bug or an unforeseen environment: still one line, no secrets
        if g.verbose:
            sys.stderr.write(scrubbed_traceback())
        err.print(f"tradeul-maint: unexpected error: {type(exc).__name__}: {scrub(str(exc))} "
                  "(run with -v for the traceback)", markup=False)
        raise typer.Exit(EXIT_INTERNAL) from None


def now_option(ctx: typer.Context, now: str | None) -> str | None:
    """`--now`; when it came from TRADEUL_MAINT_NOW and does not parse, the error names the variable."""
    source = ctx.get_parameter_source("now")
    if now and source is not None and source.name == "ENVIRONMENT":
        try:
            dt.datetime.fromisoformat(now.strip())
        except ValueError:
            raise UsageError(f"{NOW_ENVVAR}={now!r} in the environment: expected an ISO 8601 time like "
                             "2026-11-27T17:05 or 2026-11-27T22:05:00+00:00 (or unset it)") from None
    return now


def parse_date(text: str | None, option: str = "--date") -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected a date YYYY-MM-DD") from None
