"""What a person reads: plans, the status table, one session, the calendar, as rich renders them.

Every renderer takes the values the core returns (the same ones `--json` prints) and only
draws them; no decision is taken here. On a terminal the output has colour; in a pipe or
under cron it is plain text without trailing blanks, so mail and grep read it as well.
"""

from __future__ import annotations

import datetime as dt
import io
import sys
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tradeul_maint import grid, history, overview
from tradeul_maint.planner import Plan
from tradeul_maint.sources import LogPlace

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def render_plan(plan: Plan, nothing: str = "nothing to do", label: str = "", tz: str | None = None) -> None:
    """Every session looked at, oldest first: what would run and why, and what is left alone and why.

    `label` (`premarket: `) starts every line when the config has several jobs."""
    lines = [(p.session, f"would run {p.session} ({p.reason}): {', '.join(p.tasks) or 'no tasks'}",
              [f"  skip {name}: {why}" for name, why in {**p.catchup_skipped, **p.blocked}.items()]
              + [f"  wait {name}: {why}" for name, why in p.waiting.items()]
              + [f"  probe {name}: it starts if its wait_for probe finds its data, else it waits for data until "
                 f"{local(until, tz) if tz else f'{until:%Y-%m-%d %H:%M} UTC'}" for name, until in p.probes.items()])
             for p in plan.sessions]
    lines += [(d.session, f"leave {d.session}: {d.reason}", []) for d in plan.deferred]
    if plan.empty:
        out.print(label + nothing, markup=False)
    for _, line, details in sorted(lines, key=lambda item: item[0]):
        out.print(label + line, markup=False, emoji=False)
        for detail in details:
            out.print(label + detail, markup=False, emoji=False)


STATE_STYLES = {overview.DONE: "green", overview.FAILED_STATE: "bold red", overview.CORRUPT: "bold red",
                overview.EXPIRED: "yellow",
                overview.INTERRUPTED: "yellow", overview.MISSING: "yellow", overview.RUNNING: "cyan",
                overview.DUE: "cyan", overview.NOT_YET_DUE: "dim", overview.WAITING: "yellow"}
TASK_STYLES = {"completed": "green", "failed": "bold red", "skipped": "bold red", "in_progress": "cyan",
               "interrupted": "yellow", "running": "cyan"}


@contextmanager
def screen() -> Iterator[Console]:
    """`out` on a terminal; else plain text: no colour, rows never wrapped, no trailing blanks (pipes, mail)."""
    if out.is_terminal:
        yield out
        return
    buffer = io.StringIO()
    yield Console(file=buffer, width=400, color_system=None, highlight=False, emoji=False)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))


def plain_table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column != "note")
    return table


def render_status(view: overview.StatusView, log_dir: LogPlace | None = None, ranged: bool = False) -> None:
    """The sessions of the lookback (or of --since/--until: `ranged`), newest first, then the footer."""
    tz = view.timezone
    table = plain_table("session", "state", "tasks", "attempts", "started", "duration", "note")
    for s in view.sessions:
        table.add_row(s.session.isoformat(), Text(state_label(s), style=state_style(s)),
                      f"{s.tasks_completed}/{s.tasks_total}", str(s.attempts) if s.attempts else "-",
                      local(s.started_at, tz), duration(s.duration_seconds),
                      Text("; ".join(filter(None, (s.late_line(tz), s.note)))))
    with screen() as console:
        console.print(f"{which_sessions(view, ranged)}, newest first (times in {tz})", markup=False)
        console.print(table)
        render_footer(console, view, log_dir)


def which_sessions(view: overview.StatusView, ranged: bool) -> str:
    """`Last 7 XNYS sessions`, or for --since/--until (`ranged`) `XNYS sessions 2026-11-02 to 2026-11-13`."""
    days = [s.session for s in view.sessions]
    return (f"{view.calendar} sessions {min(days)} to {max(days)}" if ranged and days else
            f"Last {view.lookback} {view.calendar} sessions")


def render_session(view: overview.StatusView, log_dir: LogPlace | None = None,
                   verbose: bool = False) -> None:
    """One session task by task, every cycle with what started it and its timeline, and with `verbose` the failed
    Python tasks' whole tracebacks."""
    s = view.sessions[0]
    tz = view.timezone
    table = plain_table("task", "status", "attempts", "started", "duration", "error")
    for t in s.tasks:
        table.add_row(t.name, Text(t.status, style=TASK_STYLES.get(t.status, "")),
                      str(t.attempts) if t.attempts else "-", local(t.started_at, tz), duration(t.duration_seconds),
                      Text(t.error_summary or t.note or ""))
    with screen() as console:
        console.print(Text(f"{s.session}: ") + Text(state_label(s), style=state_style(s))
                      + Text(f", {s.tasks_completed}/{s.tasks_total} tasks completed, {plural(s.attempts, 'cycle')}, "
                             f"times in {tz}"))
        if s.late:
            console.print(Text(f"late: {s.late_line(tz)}", style="bold yellow"))
        if s.started_at:
            console.print(duration_line(s, view.now, tz), markup=False)
        if s.note:
            console.print(Text(s.note))
        console.print(table)
        for cycle in s.cycles:
            console.print()
            render_cycle(console, cycle, len(s.cycles), s, tz)
        for t in s.tasks if verbose else ():
            if t.traceback:
                console.print()
                console.print(Text(f"{t.name}: traceback", style="bold"))
                console.print(Text(t.traceback.rstrip("\n")))
        console.print()
        render_footer(console, view, log_dir)


def state_label(s: overview.SessionView) -> str:
    """The session's state as the tables show it: `done late` when it was done after its deadline."""
    return "done late" if s.late else s.state.replace("_", " ")


def state_style(s: overview.SessionView) -> str:
    return "yellow" if s.late else STATE_STYLES.get(s.state, "")


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def duration_line(s: overview.SessionView, now: dt.datetime, tz: str) -> str:
    """When the session ran: one cycle's start, end and duration; for several, the wall time from the first start
    to the last end apart from the time the cycles took."""
    if len(s.cycles) <= 1:
        return (f"started {local(s.started_at, tz)}, finished {local(s.completed_at, tz)}, took "
                f"{duration(s.duration_seconds)}" + (f", run {s.run_id}" if s.run_id else ""))
    first, last = s.cycles[0], s.cycles[-1]
    end = last.finished_at or now
    ran = sum(c.seconds or 0.0 for c in s.cycles)
    kept = f" (the document keeps the last {len(s.cycles)} of {s.attempts})" if len(s.cycles) < s.attempts else ""
    return (f"{len(s.cycles)} cycles{kept} from {local(first.started_at, tz)} to "
            f"{local(last.finished_at, tz) if last.finished_at else 'now'}: "
            f"{duration((end - first.started_at).total_seconds())} wall time; the cycles took "
            f"{duration(ran)} in all, the last {duration(last.seconds)}")


def render_cycle(console: Console, cycle, count: int, s: overview.SessionView, tz: str) -> None:
    """`cycle 2 of 3, run --date --force by alice on host-1 (run 3f2a9c1d0b7e): failed`, then its timeline."""
    line = Text(f"cycle {cycle.number} of {count}", style="bold")
    if cycle.user or cycle.host or cycle.command != "unknown":
        line += Text(f", {cycle.command} by {cycle.user or '?'} on {cycle.host or '?'}")
    if cycle.run_id:
        line += Text(f" (run {cycle.run_id})")
    line += Text(": ") + Text(cycle.outcome, style=TASK_STYLES.get(cycle.outcome, ""))
    console.print(line)
    bars = tuple(b for b in (s.timeline.bars if s.timeline else ()) if b.cycle == cycle.number)
    if bars:
        render_timeline(console, rebased(s.timeline, bars), tz, day=s.session)


def rebased(timeline: history.Timeline, bars: tuple[history.Bar, ...]) -> history.Timeline:
    """`bars` (one cycle's) on an axis of their own: from the first one's start to the last one's end."""
    first, last = min(b.start for b in bars), max(b.end for b in bars)
    start = timeline.start + dt.timedelta(seconds=first)
    return history.Timeline(start, timeline.start + dt.timedelta(seconds=last),
                            tuple(replace(b, start=round(b.start - first, 3), end=round(b.end - first, 3))
                                  for b in bars))


def render_trend(view: overview.StatusView) -> None:
    """`status --task NAME`: the task in each session (newest first), a sparkline of its durations, the median."""
    trend, tz = view.trend, view.timezone
    median = trend.median_seconds
    table = plain_table("session", "status", "attempts", "started", "duration", "x median")
    for run in reversed(trend.runs):
        ratio = f"{run.completed_in / median:.2f}x" if median and run.completed_in is not None else "-"
        state = Text(run.state or "not recorded", style=TASK_STYLES.get(run.state, "dim"))
        table.add_row(run.session.isoformat(), state,
                      str(run.attempts) if run.attempts else "-", local(run.started_at, tz),
                      duration(run.duration_seconds), ratio)
    with screen() as console:
        console.print(f"{trend.task} over {len(trend.runs)} {view.calendar} sessions, newest first (times in {tz})",
                      markup=False)
        console.print(table)
        console.print()
        console.print(Text("durations, oldest to newest: ") + Text(sparkline([r.completed_in for r in trend.runs]),
                                                                   style="cyan"))
        if median is None:
            console.print("median: - (no completed run in these sessions)", markup=False)
            return
        latest = trend.latest
        console.print(f"median {duration(median)} over {len(trend.durations)} completed runs; latest "
                      f"{duration(latest.completed_in)} ({latest.session}) = {trend.ratio:g}x the median", markup=False)
        if trend.slow:
            console.print(Text(f"slower than usual: more than slow_factor = {trend.slow_factor:g} times the median",
                               style="bold yellow"))


CELL_STYLES = {"completed": "green", "late": "yellow", "failed": "bold red", "skipped": "red", "running": "cyan",
               "interrupted": "yellow", "missing": "yellow", "corrupt": "bold red", "waiting": "cyan",
               "not_yet_due": "dim", "pending": "dim", "deferred": "dim", "expired": "yellow"}


def render_grid(view: overview.StatusView, sessions_grid: grid.Grid, ranged: bool = False) -> None:
    """`status --grid`: a row per session (newest first), a column per task, a symbol per cell, then the legend."""
    plain = not can_print("✓✗")
    table = plain_table("session", "state")
    for task in sessions_grid.tasks:
        table.add_column(task, justify="center", no_wrap=True)
    for s, cells in sessions_grid.rows:
        table.add_row(s.session.isoformat(), Text(state_label(s), style=state_style(s)),
                      *(Text(grid.NOT_A_TASK if state is None else
                             grid.CELLS[state].plain if plain else grid.CELLS[state].symbol,
                             style=CELL_STYLES.get(state or "", "")) for state in cells.values()))
    with screen() as console:
        console.print(f"{which_sessions(view, ranged)} x tasks, newest first", markup=False)
        console.print(table)
        console.print()
        console.print("legend:", markup=False)
        for c in grid.CELLS.values():
            console.print(f"  {c.plain if plain else c.symbol}  {c.meaning}", markup=False, emoji=False)
        console.print("  (blank)  not a task of that session", markup=False)


def can_print(text: str) -> bool:
    """Whether stdout's encoding has these characters (a C locale under cron may not)."""
    try:
        text.encode(sys.stdout.encoding or "utf-8")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> str:
    """One character per value, its height proportional to it (0 to the largest); `·` for no value."""
    top = max((v for v in values if v is not None), default=0.0)
    return "".join("·" if v is None else SPARKS[min(len(SPARKS) - 1, int(v / top * len(SPARKS)))] if top else
                   SPARKS[0] for v in values)


TIMELINE_WIDTH = 60
BAR_CHARS = {"completed": "█", "failed": "▓", "interrupted": "░", "running": "▒"}
BAR_LEGEND = "█ completed, ▓ failed, ░ interrupted, ▒ running"


def timeline_rows(timeline: history.Timeline, width: int = TIMELINE_WIDTH) -> list[tuple[str, str, str]]:
    """(task, its attempts as `width` characters, its latest outcome): each attempt from its start to its end on the
    common axis, in its outcome's character; every attempt gets at least one character of its own while the row
    has room, so a failure a second before its retry stays visible."""
    scale = width / timeline.seconds if timeline.seconds else 0.0
    rows: dict[str, tuple[list[str], list[int], list[str]]] = {}
    for bar in timeline.bars:
        cells, used, outcome = rows.setdefault(bar.task, ([" "] * width, [0], [bar.status]))
        first = min(width - 1, max(int(bar.start * scale), used[0]))
        last = max(first + 1, min(width, round(bar.end * scale)))
        cells[first:last] = BAR_CHARS.get(bar.status, "█") * (last - first)
        used[0], outcome[0] = last, bar.status
    return [(task, "".join(cells), outcome[0]) for task, (cells, _, outcome) in rows.items()]


def render_timeline(console: Console, timeline: history.Timeline, tz: str, width: int = TIMELINE_WIDTH,
                    day: dt.date | None = None) -> None:
    """A terminal Gantt chart: one row per task that started, on the axis from the first start to the last end;
    the date is shown when the axis starts on another day than `day` (the session's)."""
    rows = timeline_rows(timeline, width)
    name_width = max(len(task) for task, _, _ in rows)
    starts = timeline.start.astimezone(ZoneInfo(tz))
    date = f"{starts:%Y-%m-%d} " if day is not None and starts.date() != day else ""
    console.print(Text(f"timeline: {date}{clock(timeline.start, tz)} to {clock(timeline.end, tz)} {tz}, "
                       f"{duration(timeline.seconds)} ({BAR_LEGEND})", style="bold"))
    for task, bar, status in rows:
        console.print(Text(f"{task:<{name_width}} ") + Text("│" + bar + "│", style=TASK_STYLES.get(status, "")))
    left = clock(timeline.start, tz)
    centre, right = f"+{duration(timeline.seconds / 2)}", f"+{duration(timeline.seconds)}"
    gap = width + 2 - len(left) - len(centre) - len(right)
    console.print(" " * (name_width + 1) + left + " " * (gap // 2) + centre + " " * (gap - gap // 2) + right,
                  markup=False)


def render_footer(console: Console, view: overview.StatusView, log_dir: LogPlace | None = None) -> None:
    w, tz = view.next_window, view.timezone
    if w is None:
        console.print("next window: none (the calendar ends; upgrade exchange-calendars)", markup=False)
    else:
        label = "window open now" if w.contains(view.now) else "next window"
        console.print(f"{label} (session {w.session}): {local(w.start, tz)} to {local(w.end, tz)} {tz}, "
                      f"{w.start:%Y-%m-%d %H:%M} to {w.end:%Y-%m-%d %H:%M} UTC", markup=False)
    holder = view.holder
    if view.lock_problem:
        console.print(Text(f"lock: {view.lock_problem}", style="bold red"))
    else:
        console.print(f"lock: held by {holder.describe()}, run {holder.run_id}" if holder else "lock: free",
                      markup=False, emoji=False)
    if view.sources is not None:
        console.print(sources_line(view.sources.to_json()), markup=False, emoji=False)
    if view.containment:
        console.print(f"containment: {view.containment}", markup=False, emoji=False)
    if log_dir is not None:
        console.print(log_dir_line(log_dir), markup=False, emoji=False)
    if view.risk is not None and view.risk.at_risk:
        console.print(Text(f"warning: {view.risk.message()}", style="bold yellow"))
    if view.calendar_warning:
        console.print(Text(f"warning: {view.calendar_warning}", style="bold yellow"))


def sources_line(doc: dict) -> str:
    """Which config file and which Redis, from the `config` and `redis` keys of a --json document."""
    return f"config: {doc['config'] or 'none found'}; redis: {doc['redis']}"


def log_dir_line(log_dir: LogPlace) -> str:
    if log_dir.fallback_reason is None:
        return f"log: {log_dir.path}"
    return f"log: {log_dir.path}, falling back: {log_dir.preferred} is not writable ({log_dir.fallback_reason})"


def local(moment: dt.datetime | None, tz: str) -> str:
    return moment.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M") if moment else "-"


def clock(moment: dt.datetime, tz: str) -> str:
    return moment.astimezone(ZoneInfo(tz)).strftime("%H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def render_calendar(info: dict) -> None:
    """The `calendar` command's document as lines and a table of the next windows."""
    tz = info["timezone"]
    with screen() as console:
        console.print(f"{info['calendar']} ({tz}), {info['library']}: sessions {info['first_session']} to "
                      f"{info['last_session']}; window {info['window']}", markup=False)
        overrides = info["overrides"]
        early = ", ".join(f"{d} {t}" for d, t in overrides["early_closes"].items())
        console.print(f"overrides: closed {', '.join(overrides['closed']) or '-'}; extra sessions "
                      f"{', '.join(overrides['sessions']) or '-'}; early closes {early or '-'}", markup=False)
        table = plain_table("session", "close", f"window ({tz})", "window (UTC)", "note")
        for s in info["next_sessions"]:
            start, end = dt.datetime.fromisoformat(s["start"]), dt.datetime.fromisoformat(s["end"])
            table.add_row(s["session"], local(dt.datetime.fromisoformat(s["close"]), tz)[11:],
                          f"{local(start, tz)[11:]}-{local(end, tz)[11:]}", f"{start:%H:%M}-{end:%H:%M}",
                          Text("; ".join(dict.fromkeys(filter(None, ("open now" if s["open"] else None, s["override"],
                                                                     s["early_close"]))))))
        console.print(table)
        for job in info["jobs"] if len(info["jobs"]) > 1 else ():  # the table is the top level's (or first) job's
            w = job["next_window"]
            when = f"{w['start_local'][:16].replace('T', ' ')} to {w['end_local'][11:16]}" if w else "none"
            console.print(f"job {job['job']}: window {job['window']}, catchup {job['catchup']}; next {when}",
                          markup=False)
        holidays = ", ".join(f"{h['date']} {h['name']}" for h in info["holidays"])
        console.print(f"next holidays: {holidays or '-'}", markup=False)
        console.print(sources_line(info), markup=False, emoji=False)
        if info["warning"]:
            console.print(Text(f"warning: {info['warning']}", style="bold yellow"))
