"""What a command prints once its work is done.

Each job's results and the exit code they make, a busy lock, the checks, log entries, and the
documents of status --json.
"""

from __future__ import annotations

import sys

import typer

from tradeul_maint.base.errors import EXIT_TASKS_FAILED
from tradeul_maint.base.redact import scrub
from tradeul_maint.cli import render
from tradeul_maint.cli.shared import Globals, err, job_label, out, worst
from tradeul_maint.config.logs import FallbackNotice
from tradeul_maint.config.settings import Settings
from tradeul_maint.core import actions as core
from tradeul_maint.observe import logread


def job_error(report: core.RunReport) -> int:
    """One job's failure, on stderr naming the job (the other jobs went on); its exit code."""
    err.print(f"tradeul-maint: {report.job}: {scrub(str(report.error))}", markup=False, emoji=False)
    return report.error.exit_code


def exit_with(code: int) -> None:
    if code:
        raise typer.Exit(code)


def say_log_fallback(g: Globals, reports: list[core.RunReport], console_lines: list[str]) -> None:
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
    from tradeul_maint.core.preflight import unloadable_tasks

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
            codes.append(job_error(report))
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


def sessions_grid(view, settings: Settings):
    """`status --grid` of one job's view: its configured tasks are the first columns."""
    from tradeul_maint.view import grid as sessions_by_tasks

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


def print_entries(entries: list[logread.Entry], as_json: bool) -> None:
    for entry in entries:
        if as_json:
            sys.stdout.write(entry.raw + "\n")
        elif out.is_terminal:
            out.print(logread.render(entry))
        else:
            sys.stdout.write(logread.render(entry).plain + "\n")
    sys.stdout.flush()
