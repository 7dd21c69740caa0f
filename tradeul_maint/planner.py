"""What should this invocation do? A pure function of (now, calendar, settings, stored states).

No Redis and no clock in here: the caller reads the states, passes the time, and gets a
Plan of sessions to run (oldest first) with the tasks and the reason for each, plus the
sessions it considered and left alone, and why. `--dry-run` prints exactly this, the runner
runs exactly this, and `status` and `check` show it: nothing else decides.

One set of rules decides each task of a session (`decide`), whatever the command:

- `catchup = "latest"`: runs only for the newest session whose window has opened (or a
  later one); for an older session it is skipped with that reason, and the session still
  counts as done. Naming it with `run --date D --task NAME` runs it anyway.
- `market_closed_only = true`: never started while the exchange is open; it waits, with
  the close time, and so do the tasks after it. The session is not done until it ran: the
  first `run` after the close finishes it (`finishing`), whatever auto_recover says, and a
  cycle that ended with nothing failed and only waits left is no failed attempt.
- A dependency neither completed nor run in the cycle (`--task` without it) blocks: the
  task is recorded skipped, a failure. An "all" task never depends on a "latest" one (the
  settings refuse it), so no automatic run can leave a session that it cannot finish.

- `wait_for` (a probe): the task runs only once its probe exits 0. The plan names the probe
  and until when the task may wait (`wait_timeout` from its first probe, else its window's
  end); the runner probes just before it would start the task. A probe that says "not yet"
  leaves the task, and what runs after it, `waiting` for data: no attempt, no failure. The
  next `run` probes again, whatever the time (`finishing`), until the wait ends; then a probe
  that still says "not yet" fails the task.

Which sessions run is the job's `catchup` (`[schedule]` or `[jobs.NAME]`): "all" catches up
every missed session of the lookback, oldest first; "latest" only the newest session whose
window has opened; "none" none: a session whose window ended without it being done is
`expired` (`expiry`), as is, with "latest", every older session not done. An expired session
is never run by `run` or `recover`, only by `run --date D --force`.

Each plan is a function of one job's schedule, run settings and tasks (settings.Job): the
same rules applied to each job, which share nothing but the calendar.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from tradeul_maint.calendar import TradingCalendar, Window
from tradeul_maint.errors import UsageError
from tradeul_maint.schedule import after_all
from tradeul_maint.settings import LONGEST_SECONDS, RunSettings, ScheduleSettings, TaskSpec
from tradeul_maint.state import COMPLETED, FAILED, PENDING, SKIPPED, SessionStatus, parse_time


@dataclass(frozen=True)
class PlannedSession:
    """One session's cycle: every task the command considers is in exactly one of tasks, catchup_skipped,
    waiting and blocked; the tasks it does not consider keep their recorded state."""

    session: dt.date
    tasks: tuple[str, ...]  # to run in this cycle, in configuration order
    reason: str
    catchup_skipped: dict[str, str] = field(default_factory=dict)  # recorded skipped: not for this session; done
    recovery: bool = False  # a missed session caught up, not today's session in its window
    waiting: dict[str, str] = field(default_factory=dict)  # left pending: may not start now (market_closed_only)
    blocked: dict[str, str] = field(default_factory=dict)  # recorded skipped: a dependency neither done nor run
    # Tasks of `tasks` with a wait_for probe, each with the end of its wait: probed first, they may wait for data.
    probes: dict[str, dt.datetime] = field(default_factory=dict)

    @property
    def only_waits(self) -> bool:
        """Nothing to run or record now: a cycle would only say that its tasks wait."""
        return bool(self.waiting) and not (self.tasks or self.catchup_skipped or self.blocked)


@dataclass(frozen=True)
class Deferred:
    session: dt.date
    reason: str
    waiting: bool = False  # what is left waits for the close (market_closed_only); the next run after it goes on
    expired: bool = False  # never run again by `run` or `recover` (the job's catchup), only by --date D --force


@dataclass(frozen=True)
class Plan:
    sessions: tuple[PlannedSession, ...] = ()
    deferred: tuple[Deferred, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.sessions


OPENED_REACH = 3  # sessions, today's included, among which the latest opened window always is


def sessions_reached(lookback: int) -> int:
    """How many sessions back (today's included) the view can reach: what status_ttl_days must cover."""
    return max(lookback, OPENED_REACH)


def sessions_in_view(now: dt.datetime, calendar: TradingCalendar, schedule: ScheduleSettings) -> list[dt.date]:
    """The lookback: the last `lookback_sessions` sessions up to today, oldest first, and always the
    latest session whose window has opened.

    That one may be older than the lookback when the lookback is short and the window opens
    after midnight (`close+9h` puts Tuesday's window on Wednesday at 01:00), or before today's
    window (with `lookback_sessions = 1` at noon, the session of the day before), or newer than
    today (`open-10h` opens Monday's window on Sunday at 23:30): the session an operator expects
    `run` to run and `status --check` to watch is never out of view.
    """
    calendar.check_current(now)
    sessions = calendar.sessions_up_to(calendar.local_date(now), schedule.lookback_sessions)
    latest = latest_opened(now, calendar, schedule)
    return sessions if latest is None or latest in sessions else sorted([latest, *sessions])


def latest_opened(now: dt.datetime, calendar: TradingCalendar, schedule: ScheduleSettings) -> dt.date | None:
    """The newest session whose window opened at or before `now`.

    A window opens at most 24 hours after its session's close, so it is one of the last
    OPENED_REACH sessions up to today; or at most 24 hours before its session's open, so
    at most tomorrow's session.
    """
    tomorrow = calendar.local_date(now) + dt.timedelta(days=1)
    for session in reversed(calendar.sessions_up_to(tomorrow, OPENED_REACH + 1)):
        if calendar.window(session, schedule.window_start, schedule.window_minutes).start <= now:
            return session
    return None


def expiry(session: dt.date, status: SessionStatus | None, now: dt.datetime, calendar: TradingCalendar,
           schedule: ScheduleSettings, newest: dt.date | None) -> str | None:
    """Why a session that is not done is past running automatically (the job's catchup), or None.

    "none": its window has ended (a cycle started in it may be retried until then, and a task
    waiting for data is probed until then); "latest": a newer session's window has opened.
    """
    if schedule.catchup == "all" or (status is not None and status.done):
        return None
    if schedule.catchup == "latest":
        if newest is not None and session < newest:
            return f'expired (catchup = "latest"): {newest} is newer'
        return None
    window = calendar.window(session, schedule.window_start, schedule.window_minutes)
    if now < window.end:
        return None
    return (f'expired (catchup = "none"): its window ended at {_local(window.end, calendar)} without a '
            f'completed cycle')


def plan_cron(now: dt.datetime, calendar: TradingCalendar, schedule: ScheduleSettings, run: RunSettings,
              tasks: tuple[TaskSpec, ...], statuses: dict[dt.date, SessionStatus | None]) -> Plan:
    """Today's session inside its window, (with auto_recover) missed sessions before it as the job's catchup
    allows, and sessions whose last cycle left tasks waiting: for the close once it has come, for data always."""
    planned: list[PlannedSession] = []
    deferred: list[Deferred] = []
    newest = latest_opened(now, calendar, schedule)
    market_open = calendar.market_open_at(now)
    for session in sessions_in_view(now, calendar, schedule):
        window = calendar.window(session, schedule.window_start, schedule.window_minutes)
        status = statuses.get(session)
        if now < window.start or (status is not None and status.done):
            continue
        if (why := expiry(session, status, now, calendar, schedule, newest)) is not None:
            deferred.append(Deferred(session, why, expired=True))
            continue
        cycle = decide(session, status, tasks, pending_tasks(tasks, status), now, calendar, newest,
                       schedule=schedule)
        if window.contains(now):
            why = f"inside its window ({window_text(window, calendar)})"
        elif (waited := waiting_tasks(status)) and not failed_tasks(status) and \
                (waiting_for_data(status) or not market_open or cycle.only_waits):  # the session ran: finish it
            why = f"finishing: {waits_text(status)}"
        elif not schedule.auto_recover:
            deferred.append(Deferred(session, f"{state_phrase(status, run)}; auto_recover is off (use `recover`)"))
            continue
        elif market_open and not schedule.recover_during_market_hours:
            deferred.append(Deferred(session, f"{state_phrase(status, run)}; catch-up waits for the market to close"))
            continue
        else:
            why = f"catch-up: {describe(status)}"
        if (wait := retry_gate(status, now, run, calendar.tz, schedule.rerun)) is not None:
            deferred.append(Deferred(session, wait))
            continue
        if cycle.only_waits:
            deferred.append(Deferred(session, waits_phrase(cycle.waiting), waiting=True))
            continue
        planned.append(replace(cycle, reason=_with_override(why, calendar, session),
                               recovery=not window.contains(now)))
    return Plan(tuple(planned), tuple(deferred))


def plan_manual(now: dt.datetime, calendar: TradingCalendar, schedule: ScheduleSettings,
                tasks: tuple[TaskSpec, ...], status: SessionStatus | None, session: dt.date,
                only: tuple[str, ...] = (), force: bool = False) -> Plan:
    """`run --date D [--task T...] [--force]`: one session, whatever the window says; the same rules per task.
    An expired session runs only with --force."""
    newest = latest_opened(now, calendar, schedule)
    check_session(calendar, session, now, newest)
    unknown = [name for name in only if name not in {t.name for t in tasks}]
    if unknown:
        raise UsageError(f"unknown task '{unknown[0]}': configured tasks are "
                         f"{', '.join(t.name for t in tasks)}")
    expired = expiry(session, status, now, calendar, schedule, newest)
    if expired is not None and not force:
        return Plan(deferred=(Deferred(session, f"{expired} (use --force to run it)", expired=True),))
    if only:
        chosen = tuple(t.name for t in tasks if t.name in only)
        why = f"manual: only {', '.join(chosen)}"
    elif status is not None and status.done and not force:
        return Plan(deferred=(Deferred(session, "already done (use --force to run it again)"),))
    elif force:
        chosen, why = tuple(t.name for t in tasks), "manual, forced: every task"
    else:
        chosen, why = pending_tasks(tasks, status), f"manual: {describe(status)}"
    cycle = decide(session, status, tasks, chosen, now, calendar, newest, only, schedule=schedule)
    if cycle.only_waits:
        return Plan(deferred=(Deferred(session, waits_phrase(cycle.waiting), waiting=True),))
    return Plan((replace(cycle, reason=_with_override(why, calendar, session)),))


def _with_override(reason: str, calendar: TradingCalendar, session: dt.date) -> str:
    """Plans say when an operator's [calendar] override changed the day they are about."""
    note = calendar.override_note(session)
    return f"{reason}; {note}" if note else reason


def plan_recover(now: dt.datetime, calendar: TradingCalendar, schedule: ScheduleSettings,
                 tasks: tuple[TaskSpec, ...], sessions: list[dt.date],
                 statuses: dict[dt.date, SessionStatus | None], force: bool = False) -> Plan:
    """`recover`: every given session that is not done (or all, forced), oldest first; never an expired one."""
    planned, deferred = [], []
    newest = latest_opened(now, calendar, schedule)
    for session in sorted(sessions):
        status = statuses.get(session)
        if status is not None and status.done and not force:
            deferred.append(Deferred(session, "done (use --force to run it again)"))
            continue
        if (expired := expiry(session, status, now, calendar, schedule, newest)) is not None:
            deferred.append(Deferred(session, f"{expired} (`{schedule.rerun} --date {session} --force` runs it)",
                                     expired=True))
            continue
        chosen = tuple(t.name for t in tasks) if force else pending_tasks(tasks, status)
        cycle = decide(session, status, tasks, chosen, now, calendar, newest, schedule=schedule)
        if cycle.only_waits:
            deferred.append(Deferred(session, waits_phrase(cycle.waiting), waiting=True))
            continue
        planned.append(replace(cycle, reason="forced" if force and status and status.done else describe(status),
                               recovery=True))
    return Plan(tuple(planned), tuple(deferred))


def recovery_sessions(now: dt.datetime, calendar: TradingCalendar, schedule: ScheduleSettings,
                      since: dt.date | None = None, until: dt.date | None = None
                      ) -> tuple[list[dt.date], tuple[Deferred, ...]]:
    """What `recover` looks at: the lookback (or since..until) sessions whose window has passed.

    A session whose window is still ahead or open is left to `run`, as `status --check` does.
    """
    calendar.check_current(now)
    today = calendar.local_date(now)
    if since is None and until is not None:
        raise UsageError("--until needs --since")
    if since is None:
        candidates = sessions_in_view(now, calendar, schedule)
    else:
        until = until or today
        for option, day in (("--since", since), ("--until", until)):
            if day > today:
                raise UsageError(f"{option} {day} is in the future (today is {today} in {calendar.tz.key})")
            calendar.check_bounds(day)
        if since > until:
            raise UsageError(f"--since {since} is after --until {until}")
        candidates = calendar.sessions_between(since, until)
        if not candidates:
            closed = "; ".join(f"{day} {why}" for day, why in calendar.closures(since, until)[:5])
            following = calendar.next_session_after(until)
            raise UsageError(f"there is no {calendar.code} trading session from {since} to {until}"
                             + (f" ({closed})" if closed else "")
                             + (f"; the next session is {following}" if following else ""))
    sessions, deferred = [], []
    for session in candidates:
        if now < calendar.window(session, schedule.window_start, schedule.window_minutes).end:
            deferred.append(Deferred(session, "its window has not passed yet (`run` runs it)"))
        else:
            sessions.append(session)
    return sessions, tuple(deferred)


def check_session(calendar: TradingCalendar, session: dt.date, now: dt.datetime,
                  newest: dt.date | None = None) -> None:
    """A date `run --date` and `status --date` may name: a session, not after today unless its window has opened
    (`newest`: a window before the open may open the evening before)."""
    today = calendar.local_date(now)
    if session > today and session != newest:
        raise UsageError(f"{session} is in the future (today is {today} in {calendar.tz.key})")
    if not calendar.is_session(session):
        raise UsageError(calendar.no_session(session))


def pending_tasks(tasks: tuple[TaskSpec, ...], status: SessionStatus | None) -> tuple[str, ...]:
    """Resume: the tasks that have not completed for this session, nor been skipped for the catch-up policy.

    A catch-up skip stays right: a session never becomes the newest again once a newer one's
    window has opened.
    """
    if status is None or status.corrupt:
        return tuple(t.name for t in tasks)
    return tuple(t.name for t in tasks if not status.completed(t.name) and not caught_up(status, t.name))


def caught_up(status: SessionStatus, task: str) -> bool:
    """Skipped for the catch-up policy (a reason recorded, never a failure's error): counts as done."""
    record = status.details.get(task)
    return status.tasks.get(task) == SKIPPED and record is not None and bool(record.reason)


def decide(session: dt.date, status: SessionStatus | None, tasks: tuple[TaskSpec, ...], chosen: tuple[str, ...],
           now: dt.datetime, calendar: TradingCalendar, newest: dt.date | None,
           named: tuple[str, ...] = (), schedule: ScheduleSettings | None = None) -> PlannedSession:
    """What each of `chosen` does in this session's cycle now: the one set of rules (see the module docstring).

    `newest` is the newest session whose window has opened (`latest_opened`); `named` are the
    tasks the operator named with --task, which run whatever their catch-up policy.
    Dependencies are decided before their dependents; the result keeps configuration order.
    With the job's `schedule`, the tasks to run that have a wait_for probe carry the end of their wait.
    """
    readable = status is not None and not status.corrupt
    completed = {n for n, s in status.tasks.items() if s == COMPLETED} if readable else set()
    close = calendar.open_until(now)
    specs = {t.name: t for t in tasks}
    wanted = set(chosen)
    decided: dict[str, tuple[str, str]] = {}  # task -> (run | skip | wait | block, why)
    for name in dependencies_first(tasks):
        spec = specs[name]
        if name not in wanted:
            continue
        if spec.catchup == "latest" and name not in named and newest is not None and session < newest:
            decided[name] = ("skip", f'catchup = "latest": runs for {newest} only')
        elif spec.market_closed_only and close is not None:
            decided[name] = ("wait", _wait_reason(close, calendar))
        else:
            decided[name] = ("run", "")
            for dep in spec.after:
                action = decided[dep][0] if dep in decided else "done" if dep in completed else None
                if action == "wait":
                    decided[name] = ("wait", waits_after(decided[dep][1], dep))
                    break
                if action not in ("run", "done"):
                    decided[name] = ("block", f"dependency {dep} did not complete")
                    break
    by = {kind: {n: decided[n][1] for n in specs if n in decided and decided[n][0] == kind}
          for kind in ("run", "skip", "wait", "block")}
    probes = {}
    if schedule is not None and any(specs[n].wait_for for n in by["run"]):
        window = calendar.window(session, schedule.window_start, schedule.window_minutes)
        probes = {n: wait_deadline(specs[n], status, window, now, schedule.catchup)
                  for n in by["run"] if specs[n].wait_for}
    return PlannedSession(session, tuple(by["run"]), "", by["skip"], waiting=by["wait"], blocked=by["block"],
                          probes=probes)


def may_only_wait(planned: PlannedSession, tasks: tuple[TaskSpec, ...]) -> bool:
    """Whether the cycle may end having found only data missing: every task it would start first has a probe."""
    if not planned.probes:
        return False
    ran = set(planned.tasks)
    first = [t.name for t in tasks if t.name in ran and not any(d in ran for d in t.after)]
    return all(name in planned.probes for name in first)


def wait_deadline(spec: TaskSpec, status: SessionStatus | None, window: Window, now: dt.datetime,
                  catchup: str) -> dt.datetime:
    """Until when a task with a wait_for probe may wait for its data: `wait_timeout` after its first probe that
    said "not yet" (now, if none has), else its window's end; never past the window's end with catchup "none"."""
    record = status.details.get(spec.name) if status is not None and not status.corrupt else None
    since = parse_time(record.waiting_since) if record is not None else None
    end = window.end if spec.wait_timeout is None else (since or now) + dt.timedelta(seconds=spec.wait_timeout)
    return min(end, window.end) if catchup == "none" else end


def span_text(seconds: float) -> str:
    """How long, to the nearest minute, as an operator says it: `16h`, `15h30m`, `25m`; under half a minute `20s`."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{max(0, round(seconds))}s"
    hours, rest = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + (f"{rest}m" if rest or not hours else "")


def dependencies_first(tasks: tuple[TaskSpec, ...]) -> list[str]:
    """Task names, each after all its dependencies."""
    names = [t.name for t in tasks]
    return after_all(names, {t.name: [d for d in t.after if d in names] for t in tasks})


def start_wait(spec: TaskSpec, moment: dt.datetime, calendar: TradingCalendar) -> str | None:
    """Why `spec` may not start at `moment` (the exchange is open and it is market_closed_only), or None.

    The runner asks again just before it starts such a task: a long cycle planned before the
    open must not start it after.
    """
    close = calendar.open_until(moment) if spec.market_closed_only else None
    return None if close is None else _wait_reason(close, calendar)


def _wait_reason(close: dt.datetime, calendar: TradingCalendar) -> str:
    """`waits for the close at 16:00 America/New_York`: the close of the session trading now, exchange-local."""
    return f"waits for the close at {_local(close, calendar)} {calendar.tz.key}"


def waits_after(why: str, dependency: str) -> str:
    """A task after one that waits for the close waits for the same close: its reason names the dependency."""
    return f"{why.split(', after ')[0]}, after {dependency}"


def waits_phrase(waiting: dict[str, str]) -> str:
    """`clear_realtime waits for the close at 16:00 America/New_York`, one per task."""
    return "; ".join(f"{name} {why}" for name, why in waiting.items())


def failed_tasks(status: SessionStatus | None) -> list[str]:
    """Tasks its last cycle failed: failed, or skipped for a failure (a catch-up skip records a reason instead)."""
    if status is None or status.corrupt:
        return []
    return [n for n, s in status.tasks.items() if s == FAILED or (s == SKIPPED and not caught_up(status, n))]


def waiting_tasks(status: SessionStatus | None) -> list[str]:
    """Tasks a finished cycle left pending with a reason: waiting for the close (market_closed_only), or for their
    data (wait_for, and what runs after such a task)."""
    if status is None or status.corrupt or not status.finished:
        return []
    return [n for n, s in status.tasks.items() if s == PENDING and status.details.get(n)
            and status.details[n].reason]


def waiting_for_data(status: SessionStatus | None) -> list[str]:
    """The waiting tasks that wait for data (their record says since when): every `run` probes again."""
    return [n for n in waiting_tasks(status) if status.details[n].waiting_since]


def waits_text(status: SessionStatus) -> str:
    """`reset waited for the close`, `sync waits for data`, or both: what a finished cycle left waiting."""
    data = waiting_for_data(status)
    close = [n for n in waiting_tasks(status) if n not in data]
    return "; ".join(([f"{', '.join(close)} waited for the close"] if close else []) +
                     ([f"{', '.join(data)} {'waits' if len(data) == 1 else 'wait'} for data"] if data else []))


def explain(tasks: tuple[TaskSpec, ...]) -> str:
    """Each task's policy and dependencies as `decide` reads them, for `check`."""
    return "; ".join(f"{t.name}: {'every session' if t.catchup == 'all' else 'the newest session only'}"
                     + (", never while the exchange is open" if t.market_closed_only else "")
                     + (f", once {t.wait_for[0]} says its data is there" if t.wait_for else "")
                     + (f", after {', '.join(t.after)}" if t.after else "") for t in tasks)


def explain_job(schedule: ScheduleSettings) -> str:
    """The job's window and which missed sessions it runs, for `check`."""
    missed = {"all": "missed sessions caught up oldest first", "latest": "only the newest missed session caught up",
              "none": "a missed window expires (never caught up)"}[schedule.catchup]
    return f"window {schedule.window_start} for {schedule.window_minutes} min, {missed}"


def shape_warnings(tasks: tuple[TaskSpec, ...]) -> list[tuple[str, str]]:
    """(task, warning) for shapes that load but that an operator could misread; `check` shows them."""
    warnings = []
    for t in tasks:
        if t.builtin == "redis.delete_keys" and not t.market_closed_only:
            warnings.append((t.name, "redis.delete_keys without market_closed_only = true: `recover`, `run --date` "
                                     "or a window in market hours can delete live keys while the exchange is open; "
                                     "add market_closed_only = true"))
        if t.market_closed_only:
            after = [d.name for d in tasks if t.name in d.after and not d.market_closed_only]
            if after:
                warnings.append((t.name, f"market_closed_only, and {', '.join(after)} "
                                         f"{'runs' if len(after) == 1 else 'run'} after it: while the "
                                         "exchange is open they wait for the close too; set market_closed_only = "
                                         "true on them to say so, or drop the dependency"))
    return warnings


def retry_gate(status: SessionStatus | None, now: dt.datetime, run: RunSettings, tz: dt.tzinfo,
               rerun: str = "run") -> str | None:
    """Why a cron-mode run must not retry this session now, or None when it may.

    "failed, attempt 2 of 5, next try after 17:42", in the exchange's time zone like every
    other time an operator reads (with the date when it is not today's).
    """
    if status is None or status.attempts == 0:
        return None
    if status.finished and not failed_tasks(status):
        return None  # its last cycle failed nothing (tasks waited for the close, or --task ran some): no retry
    if status.attempts >= run.max_attempts:
        return (f"{state_phrase(status, run)}: gave up (max_attempts = {run.max_attempts}); run it by hand with "
                f"`{rerun} --date {status.session}`")
    if status.failed and status.completed_at is not None:
        # Doubling, up to a year: a document's attempt count (max_attempts may be large) cannot overflow it.
        wait = dt.timedelta(minutes=min(run.retry_backoff_minutes * 2.0 ** min(status.attempts - 1, 64),
                                        LONGEST_SECONDS / 60))
        retry_at = (status.completed_at + wait).astimezone(tz)
        if now < retry_at:
            when = retry_at.strftime("%H:%M" if retry_at.date() == now.astimezone(tz).date() else "%Y-%m-%d %H:%M")
            return f"{state_phrase(status, run)}, next try after {when}"
    return None


def state_phrase(status: SessionStatus | None, run: RunSettings) -> str:
    """A session that is not done, in a few words: `missed` only when it never started."""
    if status is None:
        return "missed"
    if status.corrupt:
        return "status document unreadable"
    if status.unfinished:
        return f"interrupted, attempt {status.attempts} of {run.max_attempts}"
    if failed_tasks(status):
        return f"failed, attempt {status.attempts} of {run.max_attempts}"
    if waiting_tasks(status):
        return waits_text(status)
    return "not finished"


def describe(status: SessionStatus | None) -> str:
    if status is None:
        return "no maintenance recorded"
    if status.corrupt:
        return f"status document unreadable ({status.corrupt})"
    if status.done:
        return "done"
    failed = failed_tasks(status)
    if status.unfinished:
        return "interrupted or still running"
    if failed:
        return f"failed ({', '.join(failed)})"
    if waiting_tasks(status):
        return waits_text(status)
    return "not finished"


def window_text(window: Window, calendar: TradingCalendar) -> str:
    """`17:00-17:30`, exchange-local; `17:00-09:00 the next day` for a window that ends on a later day."""
    start, end = (moment.astimezone(calendar.tz) for moment in (window.start, window.end))
    return f"{start:%H:%M}-{end:%H:%M}" + (" the next day" if end.date() > start.date() else "")


def _local(moment: dt.datetime, calendar: TradingCalendar) -> str:
    return moment.astimezone(calendar.tz).strftime("%H:%M")
