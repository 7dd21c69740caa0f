"""The typer app: each command's options in, one core call, the result rendered.

The console script enters through cli/main.py, which answers the cron tick with nothing to
do before this module (typer, rich) is loaded, and hands every other invocation to `app`
here; the options the two share are declared once, in cli/options.py. What every command
shares (option declarations, the global options, exceptions turned into exit codes, the one
place that knows them) is cli/shared.py; what a command prints after its work, cli/report.py;
what a person reads, cli/render.py.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.markup import escape

from tradeul_maint import __version__
from tradeul_maint.base import safejson
from tradeul_maint.base.errors import (EXIT_CALENDAR_EXPIRED, EXIT_CONFIG, EXIT_INTERNAL, EXIT_OK, EXIT_SIGHUP,
                                       EXIT_SIGINT, EXIT_SIGTERM, EXIT_TASKS_FAILED, EXIT_TEMPORARY, EXIT_USAGE,
                                       SIGNAL_EXIT_CODES, UsageError)
from tradeul_maint.base.redact import scrub_strings
from tradeul_maint.cli import render
from tradeul_maint.cli.options import OPTIONS_BY_NAME, VERSION_FLAG
from tradeul_maint.cli.report import (exit_with, job_error, print_entries, render_busy, render_checks, render_results,
                                      render_unloadable, say_log_fallback, sessions_grid, status_json)
from tradeul_maint.cli.shared import (Command, DateOption, DryRunOption, ForceOption, Globals, Group, JobOption,
                                      LookbackOption, NowOption, SinceOption, Switch, UntilOption, complete_task, err,
                                      errors_to_exit_codes, job_label, now_option, out, parse_date)
from tradeul_maint.config.logs import configure_logging
from tradeul_maint.config.settings import DEFAULT_CONFIG_PATHS, Overrides
from tradeul_maint.core import actions as core, basis
from tradeul_maint.observe import logfollow, logread
from tradeul_maint.run.events import Listener, ignore
from tradeul_maint.view.sources import sources

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


app = typer.Typer(cls=Group, add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG,
                  help="Runs end-of-day maintenance exactly once per exchange trading session.")


def _version(value: bool) -> None:
    if value:
        out.print(f"tradeul-maint {__version__}")
        raise typer.Exit()


def _global(name: str):
    """The typer option of a global option, as cli/options.py declares it, its variable and default in the help."""
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
        context = basis.prepare(g.settings(), now_option(ctx, now))
        with _watch(g, context, dry_run) as (console_lines, listener):
            reports = core.run(context, session, tuple(task or ()), force, dry_run, tuple(job or ()), listener)
    settings = context.settings
    if dry_run:
        for report in reports:
            label = job_label(settings, report.job)
            if report.error is not None:
                job_error(report)
                continue
            render.render_plan(report.plan, label=label, tz=context.calendar.tz.key)
            render_busy(report, cron=session is None, label=label)
        render_unloadable(settings)
        return
    for report in reports:
        if session is not None and report.plan.empty:
            for deferred in report.plan.deferred:
                out.print(f"{job_label(settings, report.job)}{deferred.session}: {deferred.reason}", markup=False)
    say_log_fallback(g, reports, console_lines)
    exit_with(render_results(reports, g.quiet, settings, cron=session is None))


@contextmanager
def _watch(g: Globals, context: basis.Context, dry_run: bool) -> Iterator[tuple[list[str], Listener]]:
    """While a run works: the log lines the console sink prints, and the run's listener: the live view on a terminal.

    The live view is drawn only when stderr is a terminal and not -q; anywhere else the
    output is exactly the summary. The console sink (config/logs.py) prints with its own level and
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
            yield printed, ignore
            return
        from tradeul_maint.cli import live

        settings = context.settings
        with live.showing(err, {t.name: t for job in settings.jobs for t in job.tasks},
                          settings.run.max_parallel) as view:
            yield printed, view
    finally:
        logger.remove(handler)


@app.command(cls=Command)
def recover(
    ctx: typer.Context,
    lookback: LookbackOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    job: JobOption = None,
    force: ForceOption = False,
    dry_run: DryRunOption = False,
    now: NowOption = None,
) -> None:
    """Run the recent sessions whose maintenance is missing, failed or interrupted, oldest first."""
    g: Globals = ctx.obj
    with errors_to_exit_codes(g):
        first, last = parse_date(since, "--since"), parse_date(until, "--until")
        context = basis.prepare(g.settings(), now_option(ctx, now))
        with _watch(g, context, dry_run) as (console_lines, listener):
            reports = core.recover(context, lookback, first, last, force, dry_run, tuple(job or ()), listener)
    settings = context.settings
    if dry_run:
        for report in reports:
            label = job_label(settings, report.job)
            if report.error is not None:
                job_error(report)
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
    say_log_fallback(g, reports, console_lines)
    exit_with(render_results(reports, g.quiet, settings, cron=False))


@app.command(cls=Command)
def status(
    ctx: typer.Context,
    date: DateOption = None,
    lookback: LookbackOption = None,
    task: Annotated[Optional[str], typer.Option(
        "--task", metavar="NAME", autocompletion=complete_task,
        help="One task across the sessions: a sparkline of its durations, the median, the latest as a multiple of "
             "it.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
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
        context = basis.prepare(g.settings(require_tasks=False), now_option(ctx, now))
        jobs = core.status(context, lookback, session, first, last, task, tuple(job or ()))
        if not given and task is None and not job:  # the lookback the metrics describe: any status refreshes them
            from tradeul_maint.observe import metrics

            metrics.publish(context.settings, context.calendar, context.clock(), jobs)
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


@app.command(cls=Command)
def check(
    ctx: typer.Context,
    as_json: Annotated[bool, Switch("--json", help="One JSON document: ok, config, redis, checks.")] = False,
    now: NowOption = None,
) -> None:
    """Preflight: config, Redis (reachable, writable, key types), tasks, log directory, calendar; exit 0 when all pass."""
    from tradeul_maint.core import preflight

    g: Globals = ctx.obj
    with errors_to_exit_codes(g):
        configure_logging(None, g.verbose, g.quiet)  # console only: a preflight writes no log entries
        report = preflight.run(g.overrides, now_option(ctx, now))
    if as_json:
        typer.echo(safejson.dumps(scrub_strings(report.to_json()), indent=2))
    else:
        render_checks(report)
    if report.fatal is not None:
        raise typer.Exit(report.fatal.exit_code)
    if not report.ok:
        raise typer.Exit(EXIT_TASKS_FAILED)


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
            from tradeul_maint.plan.calendar_cache import write_cache as build_cache

            settings = g.settings(require_tasks=False, log_files=False)
            path = build_cache(settings.schedule.calendar, write_cache)
        if not g.quiet:
            out.print(f"wrote {path}", markup=False)
        return
    with errors_to_exit_codes(g):
        context = basis.prepare(g.settings(require_tasks=False), now_option(ctx, now))
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
            with logfollow.stop_on_signals() if follow else nullcontext():
                entries, cursor = logread.last_entries(where.path, query, lines, keep_open=follow)
                if task is not None and not entries and lines and not where.notice:
                    seen = logread.task_names(where.path)
                    if task not in seen:  # else another filter left nothing: the entries are there
                        err.print(f"tradeul-maint: no entries for task {task!r} in {where.path} (or its rotated "
                                  f"files); tasks seen there: {', '.join(seen) or 'none'}", markup=False)
                print_entries(entries, as_json)
                for batch in logfollow.follow(cursor, query) if follow else ():
                    print_entries(batch, as_json)
        except logfollow.Stopped as stop:
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
