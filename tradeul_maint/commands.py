"""The command line: options in, one core call, the result rendered, exceptions turned into exit codes.

This is the only module that knows about exit codes and terminals. The console script
enters through cli.py, which answers the cron tick with nothing to do before this module
(typer, rich) is loaded, and hands every other invocation to `app` here; the options the
two share are declared once, in cli.py.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tradeul_maint import __version__, core, overview
from tradeul_maint import logread
from tradeul_maint.cli import GLOBAL_OPTIONS, NOW_ENVVAR, NOW_FLAG, error_line
from tradeul_maint.errors import (EXIT_INTERNAL, EXIT_SIGINT, EXIT_SIGTERM, EXIT_TASKS_FAILED, MaintError,
                                  UsageError)
from tradeul_maint.logs import configure_logging, scrub
from tradeul_maint.runner import Interrupted
from tradeul_maint.settings import Overrides, Settings, load_settings

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Runs end-of-day maintenance exactly once per exchange trading session.")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

NowOption = Annotated[Optional[str], typer.Option(
    NOW_FLAG, envvar=NOW_ENVVAR, metavar="TIMESTAMP",
    help="Behave as if this were the current time (ISO 8601; a naive time is exchange-local).")]
DateOption = Annotated[Optional[str], typer.Option("--date", metavar="YYYY-MM-DD", help="One session.")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Run sessions that are already done too.")]
LookbackOption = Annotated[Optional[int], typer.Option(
    "--lookback", metavar="N", min=1, help="How many sessions back, today's included (default: lookback_sessions).")]


@dataclass
class Globals:
    overrides: Overrides
    verbose: bool
    quiet: bool

    def settings(self, require_tasks: bool = True, log_files: bool = True) -> Settings:
        settings = load_settings(self.overrides, require_tasks=require_tasks)
        configure_logging(settings, self.verbose, self.quiet, files=log_files)
        return settings


def _version(value: bool) -> None:
    if value:
        out.print(f"tradeul-maint {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option(*GLOBAL_OPTIONS["config"], metavar="PATH",
                                                   help="Config file (TOML).")] = None,
    redis_url: Annotated[Optional[str], typer.Option(*GLOBAL_OPTIONS["redis_url"], metavar="URL",
                                                     help="Redis URL; none anywhere: the embedded Redis.")] = None,
    state_dir: Annotated[Optional[Path], typer.Option(*GLOBAL_OPTIONS["state_dir"], metavar="PATH")] = None,
    log_dir: Annotated[Optional[Path], typer.Option(*GLOBAL_OPTIONS["log_dir"], metavar="PATH")] = None,
    verbose: Annotated[bool, typer.Option(*GLOBAL_OPTIONS["verbose"], help="Debug output and tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option(*GLOBAL_OPTIONS["quiet"], help="Only errors.")] = False,
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
        err.print(error_line(exc), markup=False, emoji=False)
        raise typer.Exit(exc.exit_code) from None
    except Interrupted as exc:
        err.print(f"tradeul-maint: stopped by {exc}; the interrupted task is recorded as not completed",
                  markup=False)
        raise typer.Exit(EXIT_SIGTERM if exc.signum == 15 else EXIT_SIGINT) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_SIGINT) from None
    except Exception as exc:  # a bug or an unforeseen environment: still one line, no secrets
        if g.verbose:
            traceback.print_exc()
        err.print(f"tradeul-maint: unexpected error: {type(exc).__name__}: {scrub(str(exc))} "
                  "(run with -v for the traceback)", markup=False)
        raise typer.Exit(EXIT_INTERNAL) from None


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
        render_unloadable(context.settings)
        return
    if session is not None and report.plan.empty:
        for deferred in report.plan.deferred:
            out.print(f"{deferred.session}: {deferred.reason}", markup=False)
    render_results(report, g.quiet)


def render_plan(plan: core.Plan, nothing: str = "nothing to do") -> None:
    """Every session looked at, oldest first: what would run and why, and what is left alone and why."""
    lines = [(p.session, f"would run {p.session} ({p.reason}): {', '.join(p.tasks) or 'no tasks'}",
              [f"  skip {name}: {why}" for name, why in p.catchup_skipped.items()]) for p in plan.sessions]
    lines += [(d.session, f"leave {d.session}: {d.reason}", []) for d in plan.deferred]
    if plan.empty:
        out.print(nothing, markup=False)
    for _, line, details in sorted(lines, key=lambda item: item[0]):
        out.print(line, markup=False, emoji=False)
        for detail in details:
            out.print(detail, markup=False, emoji=False)


def render_unloadable(settings: Settings) -> None:
    """A dry run imports the `python` tasks, as the run would: one line for each that does not load."""
    from tradeul_maint.preflight import unloadable_tasks

    for check in unloadable_tasks(settings):
        out.print(f"{check.name} would fail: cannot load {check.detail.removeprefix('python ')}", markup=False,
                  emoji=False)


def render_results(report: core.RunReport, quiet: bool) -> None:
    """One summary line per session run (stdout), failures on stderr; exit 1 when one is not done."""
    for result in report.results:
        s = result.status
        completed = sum(state == "completed" for state in s.tasks.values())
        deferred = sum(state == "skipped" and bool(s.details.get(name) and s.details[name].reason)
                       for name, state in s.tasks.items())
        later = f" ({deferred} left to the newest session: catchup = \"latest\")" if deferred else ""
        line = f"{result.session}: {completed}/{len(s.tasks)} tasks completed{later} in {result.seconds:.1f}s"
        if result.success:
            if not quiet:
                out.print(line, markup=False)
            continue
        err.print(f"{line}; not done", markup=False)
        for name, error in result.failures.items():
            err.print(f"  {name} {s.tasks[name]}: {error}", markup=False)
    if not report.success:
        raise typer.Exit(EXIT_TASKS_FAILED)


@app.command()
def recover(
    ctx: typer.Context,
    lookback: LookbackOption = None,
    since: Annotated[Optional[str], typer.Option("--since", metavar="YYYY-MM-DD",
                                                 help="Backfill the sessions from this date...")] = None,
    until: Annotated[Optional[str], typer.Option("--until", metavar="YYYY-MM-DD",
                                                 help="...to this date (default: today).")] = None,
    force: ForceOption = False,
    dry_run: DryRunOption = False,
    now: NowOption = None,
) -> None:
    """Run the recent sessions whose maintenance is missing, failed or interrupted, oldest first."""
    g: Globals = ctx.obj
    with errors_to_exit_codes(g):
        first, last = parse_date(since, "--since"), parse_date(until, "--until")
        context = core.prepare(g.settings(), now)
        report = core.recover(context, lookback, first, last, force, dry_run)
    if dry_run:
        render_plan(report.plan, "nothing to recover")
        return
    if not report.results and not g.quiet:
        out.print("nothing to recover: every session whose window has passed is done", markup=False)
    render_results(report, g.quiet)


@app.command()
def status(
    ctx: typer.Context,
    date: DateOption = None,
    lookback: LookbackOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document (see the README for its keys).")] = False,
    check: Annotated[bool, typer.Option("--check", help="One summary line; exit 1 when a session whose window "
                                                        "has passed is not done.")] = False,
    now: NowOption = None,
) -> None:
    """Recent sessions and their state, the next window, and who holds the lock."""
    g: Globals = ctx.obj
    with errors_to_exit_codes(g):
        session = parse_date(date)
        if session is not None and lookback is not None:
            raise UsageError("--date and --lookback exclude each other: give one or the other")
        context = core.prepare(g.settings(require_tasks=False), now)
        view = core.status(context, lookback, session)
        if check and session is None and lookback is None:  # the lookback the metrics describe
            from tradeul_maint import metrics

            metrics.publish(context, view)
    if as_json:
        typer.echo(json.dumps(view.to_json(tasks=session is not None), indent=2))
    elif check:
        out.print(view.check_line(), markup=False, emoji=False)
    elif session is not None:
        render_session(view)
    else:
        render_status(view)
    if check and not view.ok:
        raise typer.Exit(EXIT_TASKS_FAILED)


STATE_STYLES = {overview.DONE: "green", overview.FAILED_STATE: "bold red", overview.CORRUPT: "bold red",
                overview.INTERRUPTED: "yellow", overview.MISSING: "yellow", overview.RUNNING: "cyan",
                overview.DUE: "cyan", overview.NOT_YET_DUE: "dim"}


@contextmanager
def _screen() -> Iterator[Console]:
    """`out` on a terminal; else plain text: no colour, rows never wrapped, no trailing blanks (pipes, mail)."""
    if out.is_terminal:
        yield out
        return
    buffer = io.StringIO()
    yield Console(file=buffer, width=400, color_system=None, highlight=False, emoji=False)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))


def _plain_table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column != "note")
    return table


def render_status(view: overview.StatusView) -> None:
    tz = view.timezone
    table = _plain_table("session", "state", "tasks", "attempts", "started", "duration", "note")
    for s in view.sessions:
        table.add_row(s.session.isoformat(), Text(s.state.replace("_", " "), style=STATE_STYLES.get(s.state, "")),
                      f"{s.tasks_completed}/{s.tasks_total}", str(s.attempts) if s.attempts else "-",
                      _local(s.started_at, tz), _duration(s.duration_seconds), Text(s.note or ""))
    with _screen() as console:
        console.print(f"Last {view.lookback} {view.calendar} sessions, newest first (times in {tz})",
                      markup=False)
        console.print(table)
        render_footer(console, view)


def render_session(view: overview.StatusView) -> None:
    s = view.sessions[0]
    tz = view.timezone
    table = _plain_table("task", "status", "attempts", "started", "duration", "error")
    for t in s.tasks:
        style = "green" if t.status == "completed" else "bold red" if t.status in ("failed", "skipped") else ""
        table.add_row(t.name, Text(t.status, style=style), str(t.attempts) if t.attempts else "-",
                      _local(t.started_at, tz), _duration(t.duration_seconds), Text(t.error or t.note or ""))
    with _screen() as console:
        console.print(Text(f"{s.session}: ") + Text(s.state.replace("_", " "), style=STATE_STYLES.get(s.state, ""))
                      + Text(f", {s.tasks_completed}/{s.tasks_total} tasks completed, {s.attempts} attempt(s), "
                             f"times in {tz}"))
        if s.started_at:
            console.print(f"started {_local(s.started_at, tz)}, finished {_local(s.completed_at, tz)}, took "
                          f"{_duration(s.duration_seconds)}" + (f", run {s.run_id}" if s.run_id else ""),
                          markup=False)
        if s.note:
            console.print(Text(s.note))
        console.print(table)
        render_footer(console, view)


def render_footer(console: Console, view: overview.StatusView) -> None:
    w, tz = view.next_window, view.timezone
    if w is None:
        console.print("next window: none (the calendar ends; upgrade exchange-calendars)", markup=False)
    else:
        label = "window open now" if w.contains(view.now) else "next window"
        console.print(f"{label} (session {w.session}): {_local(w.start, tz)} to {_local(w.end, tz)} {tz}, "
                      f"{w.start:%Y-%m-%d %H:%M} to {w.end:%Y-%m-%d %H:%M} UTC", markup=False)
    holder = view.holder
    console.print(f"lock: held by {holder.describe()}, run {holder.run_id}" if holder else "lock: free",
                  markup=False, emoji=False)
    if view.calendar_warning:
        console.print(Text(f"warning: {view.calendar_warning}", style="bold yellow"))


def _local(moment: dt.datetime | None, tz: str) -> str:
    return moment.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M") if moment else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


@app.command()
def check(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document: ok, config, redis, checks.")] = False,
    now: NowOption = None,
) -> None:
    """Preflight: config, Redis (reachable, writable, key types), tasks, log directory, calendar; exit 0 when all pass."""
    from tradeul_maint import preflight

    g: Globals = ctx.obj
    with errors_to_exit_codes(g):
        configure_logging(None, g.verbose, g.quiet)  # console only: a preflight writes no log entries
        report = preflight.run(g.overrides, now)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        render_checks(report)
    if report.fatal is not None:
        raise typer.Exit(report.fatal.exit_code)
    if not report.ok:
        raise typer.Exit(EXIT_TASKS_FAILED)


def render_checks(report) -> None:
    """One line per check, `✓ ok` or `✗ FAIL` first (so it greps), then a summary line."""
    good, bad = ("✓ ok  ", "✗ FAIL") if _can_print("✓✗") else ("+ ok  ", "x FAIL")
    lines = [f"tradeul-maint check: config {report.config or '-'}, Redis {report.redis or '-'}"]
    lines += [f"{good if c.ok else bad} {c.name}: {c.detail}" for c in report.checks]
    failed = report.failed
    lines.append(f"all {len(report.checks)} checks passed" if not failed else
                 f"{len(failed)} of {len(report.checks)} checks failed: {', '.join(c.name for c in failed)}")
    sys.stdout.write("".join(scrub(line) + "\n" for line in lines))


def _can_print(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "utf-8")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


@app.command("calendar")
def calendar_command(
    ctx: typer.Context,
    sessions: Annotated[int, typer.Option("--sessions", metavar="N", min=1, help="How many next sessions.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
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
        info = core.calendar(core.prepare(g.settings(require_tasks=False), now), sessions)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    tz = info["timezone"]
    with _screen() as console:
        console.print(f"{info['calendar']} ({tz}), {info['library']}: sessions {info['first_session']} to "
                      f"{info['last_session']}; window {info['window']}", markup=False)
        overrides = info["overrides"]
        early = ", ".join(f"{d} {t}" for d, t in overrides["early_closes"].items())
        console.print(f"overrides: closed {', '.join(overrides['closed']) or '-'}; extra sessions "
                      f"{', '.join(overrides['sessions']) or '-'}; early closes {early or '-'}", markup=False)
        table = _plain_table("session", "close", f"window ({tz})", "window (UTC)", "note")
        for s in info["next_sessions"]:
            start, end = dt.datetime.fromisoformat(s["start"]), dt.datetime.fromisoformat(s["end"])
            table.add_row(s["session"], _local(dt.datetime.fromisoformat(s["close"]), tz)[11:],
                          f"{_local(start, tz)[11:]}-{_local(end, tz)[11:]}", f"{start:%H:%M}-{end:%H:%M}",
                          Text("; ".join(filter(None, ("open now" if s["open"] else None, s["override"])))))
        console.print(table)
        if info["warning"]:
            console.print(Text(f"warning: {info['warning']}", style="bold yellow"))


@app.command()
def logs(
    ctx: typer.Context,
    lines: Annotated[int, typer.Option("-n", "--lines", metavar="N", min=0,
                                       help="How many of the last entries (across rotated files).")] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new entries (Ctrl-C ends).")] = False,
    errors: Annotated[bool, typer.Option("--errors", help="Read maintenance_errors.log.")] = False,
    date: DateOption = None,
    task: Annotated[Optional[str], typer.Option("--task", metavar="NAME", help="Only this task's entries.")] = None,
    level: Annotated[Optional[str], typer.Option("--level", metavar="LEVEL",
                                                 help="Only this level and above (DEBUG, INFO, WARNING, ERROR).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="The entries as written: one JSON object a line.")] = False,
) -> None:
    """The last entries of the maintenance log, oldest first; works without a config file."""
    g: Globals = ctx.obj
    with errors_to_exit_codes(g):
        query = logread.Query(parse_date(date), task, logread.parse_level(level), parsed_only=as_json)
        where = logread.locate(g.settings(require_tasks=False, log_files=False), errors)
        if where.notice:
            err.print(f"tradeul-maint: {where.notice}", markup=False)
        entries, cursor = logread.last_entries(where.path, query, lines, keep_open=follow)
        _print_entries(entries, as_json)
        try:
            for batch in logread.follow(cursor, query) if follow else ():
                _print_entries(batch, as_json)
        except KeyboardInterrupt:
            pass  # the way to end --follow, not a failure


def _print_entries(entries: list[logread.Entry], as_json: bool) -> None:
    for entry in entries:
        if as_json:
            sys.stdout.write(entry.raw + "\n")
        elif out.is_terminal:
            out.print(logread.render(entry))
        else:
            sys.stdout.write(logread.render(entry).plain + "\n")
    sys.stdout.flush()

