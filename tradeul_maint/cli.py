"""The command line: options in, one core call, the result rendered, exceptions turned into exit codes.

This is the only module that knows about exit codes and terminals.
"""

from __future__ import annotations

import datetime as dt
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console

from tradeul_maint import __version__, core
from tradeul_maint.errors import EXIT_SIGINT, EXIT_SIGTERM, EXIT_TASKS_FAILED, MaintError, UsageError
from tradeul_maint.logs import configure_logging
from tradeul_maint.runner import Interrupted
from tradeul_maint.settings import Overrides, Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Runs end-of-day maintenance exactly once per exchange trading session.")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

NowOption = Annotated[Optional[str], typer.Option(
    "--now", envvar="TRADEUL_MAINT_NOW", metavar="TIMESTAMP",
    help="Behave as if this were the current time (ISO 8601; a naive time is exchange-local).")]
DateOption = Annotated[Optional[str], typer.Option("--date", metavar="YYYY-MM-DD", help="One session.")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Run sessions that are already done too.")]


@dataclass
class Globals:
    overrides: Overrides
    verbose: bool
    quiet: bool

    def settings(self, require_tasks: bool = True) -> Settings:
        settings = load_settings(self.overrides, require_tasks=require_tasks)
        configure_logging(settings, self.verbose, self.quiet)
        return settings


def _version(value: bool) -> None:
    if value:
        out.print(f"tradeul-maint {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", metavar="PATH", help="Config file (TOML).")] = None,
    redis_url: Annotated[Optional[str], typer.Option("--redis-url", metavar="URL",
                                                     help="Redis URL; none anywhere: the embedded Redis.")] = None,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", metavar="PATH")] = None,
    log_dir: Annotated[Optional[Path], typer.Option("--log-dir", metavar="PATH")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug output and tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    ctx.obj = Globals(Overrides(config, redis_url, state_dir, log_dir), verbose, quiet)


@contextmanager
def errors_to_exit_codes(g: Globals) -> Iterator[None]:
    try:
        yield
    except MaintError as exc:
        if g.verbose:
            traceback.print_exc()
        err.print(f"tradeul-maint: {exc}", markup=False)
        raise typer.Exit(exc.exit_code) from None
    except Interrupted as exc:
        err.print(f"tradeul-maint: stopped by {exc}; the interrupted task is recorded as not completed",
                  markup=False)
        raise typer.Exit(EXIT_SIGTERM if exc.signum == 15 else EXIT_SIGINT) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_SIGINT) from None


def parse_date(text: str | None, option: str = "--date") -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected a date YYYY-MM-DD") from None


@app.command()
def run(
    ctx: typer.Context,
    date: DateOption = None,
    task: Annotated[Optional[list[str]], typer.Option("--task", metavar="NAME",
                                                      help="Only this task (repeatable; with --date).")] = None,
    force: ForceOption = False,
    dry_run: DryRunOption = False,
    now: NowOption = None,
) -> None:
    """Cron entry point: run today's session inside its window, and catch up missed ones."""
    g: Globals = ctx.obj
    with errors_to_exit_codes(g):
        session = parse_date(date)
        if (task or force) and session is None:
            raise UsageError(f"{'--task' if task else '--force'} needs --date YYYY-MM-DD")
        context = core.prepare(g.settings(), now)
        report = core.run(context, session, tuple(task or ()), force, dry_run)
    if dry_run:
        render_plan(report.plan)
        return
    if session is not None and report.plan.empty:
        for deferred in report.plan.deferred:
            out.print(f"{deferred.session}: {deferred.reason}", markup=False)
    render_results(report, g.quiet)
    if not report.success:
        raise typer.Exit(EXIT_TASKS_FAILED)


def render_plan(plan: core.Plan) -> None:
    if plan.empty:
        out.print("nothing to do", markup=False)
    for p in plan.sessions:
        tasks = ", ".join(p.tasks) if p.tasks else "no tasks"
        out.print(f"would run {p.session} ({p.reason}): {tasks}", markup=False)
        for name, why in p.catchup_skipped.items():
            out.print(f"  skip {name}: {why}", markup=False)
    for d in plan.deferred:
        out.print(f"not now {d.session}: {d.reason}", markup=False)


def render_results(report: core.RunReport, quiet: bool) -> None:
    for result in report.results:
        s = result.status
        completed = sum(state == "completed" for state in s.tasks.values())
        line = f"{result.session}: {completed}/{len(s.tasks)} tasks completed in {result.seconds:.1f}s"
        if result.success:
            if not quiet:
                out.print(line, markup=False)
            continue
        err.print(f"{line}; not done", markup=False)
        for name, error in result.failures.items():
            err.print(f"  {name} {s.tasks[name]}: {error}", markup=False)


def main() -> None:
    app(prog_name="tradeul-maint")


if __name__ == "__main__":
    main()
