"""The command line: options in, one core call, the result rendered, exceptions turned into exit codes.

This is the only module that knows about exit codes. The console script enters through
cli.py, which answers the cron tick with nothing to do before this module (typer, rich) is
loaded, and hands every other invocation to `app` here; the options the two share are
declared once, in options.py. What a person reads is drawn by render.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from tradeul_maint import __version__, core, logread, render, safejson
from tradeul_maint.errors import (
    EXIT_CALENDAR_EXPIRED,
    EXIT_CONFIG,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_SIGHUP,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_TASKS_FAILED,
    EXIT_TEMPORARY,
    EXIT_USAGE,
    SIGNAL_EXIT_CODES,
    MaintError,
    UsageError,
)
from tradeul_maint.logs import (
    FallbackNotice,
    configure_logging,
    log_dir_for,
)
from tradeul_maint.options import (
    NOW_ENVVAR,
    NOW_FLAG,
    OPTIONS_BY_NAME,
    VERSION_FLAG,
    error_line,
    hoist,
)
from tradeul_maint.redact import scrub, scrub_strings, scrubbed_traceback
from tradeul_maint.runner import Interrupted
from tradeul_maint.settings import (
    DEFAULT_CONFIG_PATHS,
    Overrides,
    Settings,
    load_settings,
)
from tradeul_maint.sources import LogPlace, sources

EXIT_CODES = ((EXIT_OK, "done, or nothing to do"),
              (EXIT_TASKS_FAILED, "a task this command ran failed or was skipped"),
              (EXIT_USAGE, "bad usage"),
              (EXIT_CALENDAR_EXPIRED, "the calendar ends before today: upgrade exchange-calendars"),
              (EXIT_INTERNAL, "internal error, a bug (-v shows the traceback)"),
              (EXIT_TEMPORARY, "temporary: Redis unreachable, the lock held by another run"),
              (EXIT_CONFIG, "configuration error"),
              (f"{EXIT_SIGHUP}/{EXIT_SIGINT}/{EXIT_SIGTERM}", "stopped by SIGHUP/SIGINT/SIGTERM"))
CONFIG_SEARCH = ", else ".join(str(p) if p.is_absolute() else f"./{p}" for p in DEFAULT_CONFIG_PATHS)
EPILOG = (f"Config file: --config, else TRADEUL_MAINT_CONFIG, else {CONFIG_SEARCH}.\n\n"
          + "Exit codes:\n" + "\n".join(f"  {code:<11} {meaning}" for code, meaning in EXIT_CODES))
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
    """The app: global options are read after the command's name too, as cli.py's quick parser reads them."""

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


app = typer.Typer(cls=Group, add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG,
                  help="Runs end-of-day maintenance exactly once per exchange trading session.")
out, err = render.out, render.err


def Switch(*flags: str, help: str):  # noqa: N802 - reads like typer.Option, which it wraps
    """A flag without a value; shown without a `<bool>` type in the help."""
    return typer.Option(*flags, metavar="", help=help)


NowOption = Annotated[Optional[str], typer.Option(
    NOW_FLAG, envvar=NOW_ENVVAR, metavar="TIMESTAMP",
    help="Behave as if this were the current time (ISO 8601; a naive time is exchange-local).")]
DateOption = Annotated[Optional[str], typer.Option("--date", metavar="YYYY-MM-DD", help="One session.")]
DryRunOption = Annotated[bool, Switch("--dry-run", help="Print the plan and change nothing.")]
ForceOption = Annotated[bool, Switch("--force", help="Run sessions that are already done too.")]
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


def _version(value: bool) -> None:
    if value:
        out.print(f"tradeul-maint {__version__}")
        raise typer.Exit()


def _global(name: str):
    """The typer option of a global option, as options.py declares it, its variable and default in the help."""
    option = OPTIONS_BY_NAME[name]
    help = f"{option.help} [env var: {option.envvar}] [default: {option.default}]"
    return typer.Option(*option.flags, metavar=option.metavar or "", help=escape(help))


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[Optional[Path], _global("config")] = None,
    redis_url: Annotated[Optional[str], _global("redis_url")] = None,
    state_dir: Annotated[Optional[Path], _global("state_dir")] = None,
    log_dir: Annotated[Optional[Path], _global("log_dir")] = None,
    verbose: Annotated[bool, _global("verbose")] = False,
    quiet: Annotated[bool, _global("quiet")] = False,
    version: Annotated[bool, typer.Option(VERSION_FLAG, callback=_version, is_eager=True, metavar="",
                                          help="Print the version and exit.")] = False,
) -> None:
    ctx.obj = Globals(Overrides(config, redis_url, state_dir, log_dir), verbose, quiet)


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


def _now(ctx: typer.Context, now: str | None) -> str | None:
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


@app.command(cls=Command)
def run(
    ctx: typer.Context,
    date: DateOption = None,
    task: Annotated[Optional[list[str]], typer.Option("--task", metavar="NAME", autocompletion=complete_task,
                                                      help="Only this task (repeatable; with --date).")] = None,
    job: JobOption = None,
    force: ForceOption = False,
    dry_run: DryRunOption = False,
    now: NowOption = None,
) -> None:
    """Cron entry point: run each job's session inside its window, and catch up missed ones."""
    g: Globals = ctx.obj
    with errors_to_exit_codes(g):
        session = parse_date(date)
        if (task or force) and session is None:
            raise UsageError(f"{'--task' if task else '--force'} needs --date YYYY-MM-DD")
        context = core.prepare(g.settings(), _now(ctx, now))
        with _watch(g, context, dry_run) as console_lines:
            reports = core.run(context, session, tuple(task or ()), force, dry_run, tuple(job or ()))
    settings = context.settings
    if dry_run:
        for report in reports:
            label = job_label(settings, report.job)
            if report.error is not None:
                _job_error(report)
                continue
            render.render_plan(report.plan, label=label, tz=context.calendar.tz.key)
            render_busy(report, cron=session is None, label=label)
        render_unloadable(settings)
        return
    for report in reports:
        if session is not None and report.plan.empty:
            for deferred in report.plan.deferred:
                out.print(f"{job_label(settings, report.job)}{deferred.session}: {deferred.reason}", markup=False)
    _say_log_fallback(g, reports, console_lines)
    _exit(render_results(reports, g.quiet, settings, cron=session is None))


def _job_error(report: core.RunReport) -> int:
    """One job's failure, on stderr naming the job (the other jobs went on); its exit code."""
    err.print(f"tradeul-maint: {report.job}: {scrub(str(report.error))}", markup=False, emoji=False)
    return report.error.exit_code


def _exit(code: int) -> None:
    if code:
        raise typer.Exit(code)


@contextmanager
def _watch(g: Globals, context: core.Context, dry_run: bool) -> Iterator[list[str]]:
    """While a run works: the live view on a terminal, and the log lines the console sink prints.

    The live view is drawn only when stderr is a terminal and not -q; anywhere else the
    output is exactly the summary. The console sink (logs.py) prints with its own level and
    filter; the first line it prints carries the `log_dir_fallback` notice when the log
    directory fell back, so a run that did work and printed none says it itself afterwards.
    """
    from loguru import logger

    printed: list[str] = []
    handler = logger.add(lambda message: printed.append(message.record["message"]),
                         level="DEBUG" if g.verbose else "ERROR" if g.quiet else "WARNING",
                         filter=lambda record: record["extra"].get("console", True) or g.verbose,
                         format="{message}", colorize=False)
    try:
        if dry_run or g.quiet or not err.is_terminal:
            yield printed
            return
        from tradeul_maint import live

        settings = context.settings
        with live.showing(err, {t.name: t for job in settings.jobs for t in job.tasks}, settings.run.max_parallel):
            yield printed
    finally:
        logger.remove(handler)


def _say_log_fallback(g: Globals, reports: list[core.RunReport], console_lines: list[str]) -> None:
    """Once on stderr, from a run that did work: its log is not where the settings point (silent ticks say nothing)."""
    place = g.log_dir
    worked = any(r.results and not all(c.waited_only for c in r.results) for r in reports)
    if worked and place is not None and place.fallback_reason and not console_lines and not g.quiet:
        err.print(FallbackNotice(place.preferred, place.path, place.fallback_reason).console_line().rstrip("\n"),
                  markup=False, emoji=False)


def render_busy(report: core.RunReport, cron: bool, label: str = "") -> None:
    """A dry run whose plan another run's lock would stop says so: the same call now would not run it."""
    if report.busy is not None:
        then = "run nothing and exit 0" if cron and not report.busy.foreign else "run nothing and exit 75"
        out.print(f"{label}but the lock is held by {report.busy.describe()}: this call would {then} now",
                  markup=False, emoji=False)


def render_unloadable(settings: Settings) -> None:
    """A dry run imports the `python` tasks, as the run would: one line for each that does not load."""
    from tradeul_maint.preflight import unloadable_tasks

    for check in unloadable_tasks(settings):
        out.print(f"{check.name} would fail: cannot load {check.detail.removeprefix('python ')}", markup=False,
                  emoji=False)


def render_results(reports: list[core.RunReport], quiet: bool, settings: Settings, cron: bool = True) -> int:
    """One summary line per session run (stdout), failures on stderr; the exit code: 1 when a task this command
    ran failed, or the worst of the jobs' errors.

    A session can stay not done without any of this command's tasks failing: `run --date D
    --task T` re-ran T alone, and another task of D is still failed or pending. That is said
    on stdout with the tasks left, and is exit 0: what was asked for worked. A cycle that only
    found its data missing (wait_for) says nothing under cron; a manual run says it waits.
    """
    codes = []
    for report in reports:
        label = job_label(settings, report.job)
        if report.error is not None:
            codes.append(_job_error(report))
            continue
        for result in report.results:
            s, line = result.status, label + result.headline()
            if result.waited_only:
                if not cron and not quiet:
                    out.print(f"{label}{result.session}: " + "; ".join(f"{name} {why}" for name, why in
                                                                      result.waiting.items()), markup=False)
            elif result.success:
                if not quiet:
                    out.print(line, markup=False)
            elif result.failures:
                codes.append(EXIT_TASKS_FAILED)
                err.print(f"{line}; not done", markup=False)
                for failure in result.failure_lines():
                    err.print(failure, markup=False)
            elif not quiet:
                left = [f"{name} ({result.waiting.get(name, state)})" for name, state in s.tasks.items()
                        if state != "completed" and name not in result.left_to_newest]
                out.print(f"{line}; the session is not done yet, left: {', '.join(left)}", markup=False)
    return worst(codes)


@app.command(cls=Command)
def recover(
    ctx: typer.Context,
    lookback: LookbackOption = None,
    since: Annotated[Optional[str], typer.Option("--since", metavar="YYYY-MM-DD",
                                                 help="Backfill the sessions from this date...")] = None,
    until: Annotated[Optional[str], typer.Option("--until", metavar="YYYY-MM-DD",
                                                 help="...to this date (default: today).")] = None,
    job: JobOption = None,
    force: ForceOption = False,
    dry_run: DryRunOption = False,
    now: NowOption = None,
) -> None:
    """Run the recent sessions whose maintenance is missing, failed or interrupted, oldest first."""
    g: Globals = ctx.obj
    with errors_to_exit_codes(g):
        first, last = parse_date(since, "--since"), parse_date(until, "--until")
        context = core.prepare(g.settings(), _now(ctx, now))
        with _watch(g, context, dry_run) as console_lines:
            reports = core.recover(context, lookback, first, last, force, dry_run, tuple(job or ()))
    settings = context.settings
    if dry_run:
        for report in reports:
            label = job_label(settings, report.job)
            if report.error is not None:
                _job_error(report)
                continue
            render.render_plan(report.plan, "nothing to recover", label, context.calendar.tz.key)
            render_busy(report, cron=False, label=label)
        return
    for report in reports:
        label = job_label(settings, report.job)
        waiting = [d for d in report.plan.deferred if d.waiting]
        if report.error is None and not report.results and not g.quiet:
            for deferred in waiting:
                out.print(f"{label}{deferred.session}: {deferred.reason}", markup=False)
            if not waiting:
                out.print(f"{label}nothing to recover: every session whose window has passed is done"
                          + (" or expired" if any(d.expired for d in report.plan.deferred) else ""), markup=False)
    _say_log_fallback(g, reports, console_lines)
    _exit(render_results(reports, g.quiet, settings, cron=False))


@app.command(cls=Command)
def status(
    ctx: typer.Context,
    date: DateOption = None,
    lookback: LookbackOption = None,
    task: Annotated[Optional[str], typer.Option(
        "--task", metavar="NAME", autocompletion=complete_task,
        help="One task across the sessions: a sparkline of its durations, the median, the latest as a multiple of "
             "it.")] = None,
    since: Annotated[Optional[str], typer.Option("--since", metavar="YYYY-MM-DD",
                                                 help="The sessions from this date (instead of the lookback)...")]
    = None,
    until: Annotated[Optional[str], typer.Option("--until", metavar="YYYY-MM-DD",
                                                 help="...to this date (default: today).")] = None,
    as_json: Annotated[bool, Switch("--json", help="One JSON document (docs/operations.md lists its keys).")] = False,
    check: Annotated[bool, Switch("--check", help="One summary line, and a WARNING line each when the newest done "
                                                  "session was late or the window is at risk; exit 1 when a session "
                                                  "whose window has passed is not done (a warning alone is 0).")]
    = False,
    grid: Annotated[bool, Switch("--grid", help="Sessions x tasks: a symbol per task per session, and a legend.")]
    = False,
    job: JobOption = None,
    now: NowOption = None,
) -> None:
    """Recent sessions and their state, the next window, and who holds the lock: for every job."""
    g: Globals = ctx.obj
    with errors_to_exit_codes(g):
        session = parse_date(date)
        first, last = parse_date(since, "--since"), parse_date(until, "--until")
        given = [name for name, value in (("--date", date), ("--lookback", lookback),
                                          ("--since/--until", since or until)) if value is not None]
        if len(given) > 1:
            raise UsageError(f"{' and '.join(given)} exclude each other: give one of them")
        views = [name for name, value in (("--task", task is not None), ("--grid", grid)) if value]
        others = [name for name, value in (("--date", session is not None), ("--check", check)) if value]
        if views and len(views + others) > 1:
            raise UsageError(f"{views[0]} and {(views[1:] + others)[0]} exclude each other")
        context = core.prepare(g.settings(require_tasks=False), _now(ctx, now))
        jobs = core.status(context, lookback, session, first, last, task, tuple(job or ()))
        if not given and task is None and not job:  # the lookback the metrics describe: any status refreshes them
            from tradeul_maint import metrics

            metrics.publish(context, jobs)
    settings = context.settings
    several = len(settings.jobs) > 1
    g.warn(jobs[0].sources.warning)
    grids = {view.job: sessions_grid(view, settings) for view in jobs} if grid else {}
    if as_json:
        docs = [view.trend_json() if task else grids[view.job].to_json(view) if grid else
                view.to_json(tasks=session is not None) for view in jobs]
        # Strict JSON (no NaN: the reader lets none in), and no secret even in a document written before this version.
        typer.echo(safejson.dumps(scrub_strings({**status_json(jobs, docs),
                                                 **(g.log_dir.to_json() if g.log_dir else {})}), indent=2))
    elif check:
        if several:
            bad = [v.job for v in jobs if not v.ok]
            out.print(f"NOT OK: {len(bad)} of {len(jobs)} jobs: {', '.join(bad)}" if bad else
                      f"OK: all {len(jobs)} jobs", markup=False, emoji=False)
        for view in jobs:
            label = job_label(settings, view.job)
            out.print(f"{label}{view.check_line()}", markup=False, emoji=False)
            for warning in view.warnings:  # a line each, exit code unchanged: late is not undone
                out.print(f"WARNING: {label}{warning}", markup=False, emoji=False)
    else:
        ranged = first is not None or last is not None
        for i, view in enumerate(jobs):
            if several:  # a heading per job: its window and catch-up policy
                out.print(("\n" if i else "") + f"job {view.job}: {view.policy}", markup=False, emoji=False)
            if task is not None:
                render.render_trend(view)
            elif grid:
                render.render_grid(view, grids[view.job], ranged=ranged)
            elif session is not None:
                render.render_session(view, g.log_dir, g.verbose)
            else:
                render.render_status(view, g.log_dir, ranged=ranged)
    if check and not all(v.ok for v in jobs):
        raise typer.Exit(EXIT_TASKS_FAILED)


def sessions_grid(view, settings: Settings):
    """`status --grid` of one job's view: its configured tasks are the first columns."""
    from tradeul_maint import grid as sessions_by_tasks

    job = next(j for j in settings.jobs if j.name == view.job) if settings.jobs else None
    return sessions_by_tasks.build(view, tuple(t.name for t in job.tasks) if job else settings.task_names)


def status_json(views: list, docs: list[dict]) -> dict:
    """`status --json`: with one job, its document as ever (and `job`); with several, what they share and `ok`
    over all of them. Either way `jobs` lists each job's document, with its name."""
    listed = [{"job": view.job, **doc} for view, doc in zip(views, docs)]
    if len(docs) == 1:
        return {**docs[0], "job": views[0].job, "jobs": listed}
    shared = {k: docs[0][k] for k in ("now", "calendar", "timezone") if k in docs[0]}
    return {**shared, "ok": all(v.ok for v in views),
            "not_done": [f"{v.job}:{s.session}" for v in views for s in v.overdue], "jobs": listed}


@app.command(cls=Command)
def check(
    ctx: typer.Context,
    as_json: Annotated[bool, Switch("--json", help="One JSON document: ok, config, redis, checks.")] = False,
    now: NowOption = None,
) -> None:
    """Preflight: config, Redis (reachable, writable, key types), tasks, log directory, calendar; exit 0 when all pass."""
    from tradeul_maint import preflight

    g: Globals = ctx.obj
    with errors_to_exit_codes(g):
        configure_logging(None, g.verbose, g.quiet)  # console only: a preflight writes no log entries
        report = preflight.run(g.overrides, _now(ctx, now))
    if as_json:
        typer.echo(safejson.dumps(scrub_strings(report.to_json()), indent=2))
    else:
        render_checks(report)
    if report.fatal is not None:
        raise typer.Exit(report.fatal.exit_code)
    if not report.ok:
        raise typer.Exit(EXIT_TASKS_FAILED)


def render_checks(report) -> None:
    """One line per check, `✓ ok`, `! warn` or `✗ FAIL` first (so it greps), then a summary line."""
    good, bad = ("✓ ok  ", "✗ FAIL") if render.can_print("✓✗") else ("+ ok  ", "x FAIL")
    lines = [f"tradeul-maint check: config {report.config or '-'}, Redis {report.redis or '-'}"]
    lines += [f"{'! warn' if c.warning and c.ok else good if c.ok else bad} {c.name}: {c.detail}"
              for c in report.checks]
    failed, warned = report.failed, report.warned
    also = f" ({len(warned)} with a warning: {', '.join(c.name for c in warned)})" if warned else ""
    lines.append(f"all {len(report.checks)} checks passed{also}" if not failed else
                 f"{len(failed)} of {len(report.checks)} checks failed: {', '.join(c.name for c in failed)}{also}")
    sys.stdout.write("".join(scrub(line) + "\n" for line in lines))


@app.command("calendar", cls=Command)
def calendar_command(
    ctx: typer.Context,
    sessions: Annotated[int, typer.Option("--sessions", metavar="N", min=1, help="How many next sessions.")] = 5,
    as_json: Annotated[bool, Switch("--json", help="One JSON document.")] = False,
    now: NowOption = None,
    write_cache: Annotated[Optional[Path], typer.Option(
        "--write-cache", metavar="DIR", help="Build the calendar cache into DIR (at image build; read through "
                                             "TRADEUL_MAINT_CALENDAR_CACHE) and exit.")] = None,
) -> None:
    """The trading calendar in use: its version and reach, overrides, and the next sessions' windows."""
    g: Globals = ctx.obj
    if write_cache is not None:
        with errors_to_exit_codes(g):
            from tradeul_maint.calendar import write_cache as build_cache

            settings = g.settings(require_tasks=False, log_files=False)
            path = build_cache(settings.schedule.calendar, write_cache)
        if not g.quiet:
            out.print(f"wrote {path}", markup=False)
        return
    with errors_to_exit_codes(g):
        context = core.prepare(g.settings(require_tasks=False), _now(ctx, now))
        info = core.calendar(context, sessions)
    g.warn(sources(context.settings).warning)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    render.render_calendar(info)


@app.command(cls=Command)
def logs(
    ctx: typer.Context,
    lines: Annotated[int, typer.Option("-n", "--lines", metavar="N", min=0,
                                       help="How many of the last entries (across rotated files).")] = 50,
    follow: Annotated[bool, Switch("-f", "--follow", help="Keep printing new entries (Ctrl-C ends).")] = False,
    errors: Annotated[bool, Switch("--errors", help="Read maintenance_errors.log.")] = False,
    date: DateOption = None,
    task: Annotated[Optional[str], typer.Option("--task", metavar="NAME", autocompletion=complete_task,
                                                help="Only this task's entries.")] = None,
    level: Annotated[Optional[str], typer.Option("--level", metavar="LEVEL",
                                                 help="Only this level and above (DEBUG, INFO, WARNING, ERROR).")]
    = None,
    as_json: Annotated[bool, Switch("--json", help="The entries as written: one JSON object a line.")] = False,
    job: JobOption = None,
) -> None:
    """The last entries of the maintenance log, oldest first; works without a config file."""
    g: Globals = ctx.obj
    with errors_to_exit_codes(g):
        query = logread.Query(parse_date(date), task, logread.parse_level(level), parsed_only=as_json,
                              jobs=tuple(job or ()))
        where = logread.locate(g.settings(require_tasks=False, log_files=False), errors)
        if where.notice:
            err.print(f"tradeul-maint: {where.notice}", markup=False)
        try:
            with logread.stop_on_signals() if follow else nullcontext():
                entries, cursor = logread.last_entries(where.path, query, lines, keep_open=follow)
                if task is not None and not entries and lines and not where.notice:
                    seen = logread.task_names(where.path)
                    if task not in seen:  # else another filter left nothing: the entries are there
                        err.print(f"tradeul-maint: no entries for task {task!r} in {where.path} (or its rotated "
                                  f"files); tasks seen there: {', '.join(seen) or 'none'}", markup=False)
                _print_entries(entries, as_json)
                for batch in logread.follow(cursor, query) if follow else ():
                    _print_entries(batch, as_json)
        except logread.Stopped as stop:
            _stop_following(stop.signum)


def _stop_following(signum: int) -> None:
    """`logs -f` ends on a signal: Ctrl-C (SIGINT) is the way to end it, exit 0; SIGTERM and SIGHUP exit 143, 129.

    A reader has nothing to tidy up, so once what it printed is flushed it exits at once,
    without the interpreter's teardown (a tenth of a second with typer and rich loaded).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe: nothing more to say anyway
    os._exit(EXIT_OK if signum == signal.SIGINT else SIGNAL_EXIT_CODES[signum])


def _print_entries(entries: list[logread.Entry], as_json: bool) -> None:
    for entry in entries:
        if as_json:
            sys.stdout.write(entry.raw + "\n")
        elif out.is_terminal:
            out.print(logread.render(entry))
        else:
            sys.stdout.write(logread.render(entry).plain + "\n")
    sys.stdout.flush()

