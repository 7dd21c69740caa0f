"""What should this invocation do? A pure function of (now, calendar, settings, stored states).

No Redis and no clock in here: the caller reads the states, passes the time, and gets a
Plan of sessions to run (oldest first) with the tasks and the reason for each, plus the
sessions it considered and left alone, and why. `--dry-run` prints exactly this.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from tradeul_maint.calendar import TradingCalendar
from tradeul_maint.errors import UsageError
from tradeul_maint.settings import RunSettings, ScheduleSettings, TaskSpec
from tradeul_maint.state import SessionStatus


@dataclass(frozen=True)
class PlannedSession:
    session: dt.date
    tasks: tuple[str, ...]  # to run in this cycle, in configuration order
    reason: str
    catchup_skipped: dict[str, str] = field(default_factory=dict)  # task -> why it is not run here
    recovery: bool = False  # a missed session caught up, not today's session in its window


@dataclass(frozen=True)
class Deferred:
    session: dt.date
    reason: str


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
    window (with `lookback_sessions = 1` at noon, the session of the day before): the session
    an operator expects `run` to run and `status --check` to watch is never out of view.
    """
    calendar.check_current(now)
    sessions = calendar.sessions_up_to(calendar.local_date(now), schedule.lookback_sessions)
    latest = latest_opened(now, calendar, schedule)
    return sessions if latest is None or latest in sessions else [latest, *sessions]


def latest_opened(now: dt.datetime, calendar: TradingCalendar, schedule: ScheduleSettings) -> dt.date | None:
    """The newest session whose window opened at or before `now`.

    A window opens at most 24 hours after its session's close, so it is one of the last
    OPENED_REACH sessions up to today.
    """
    for session in reversed(calendar.sessions_up_to(calendar.local_date(now), OPENED_REACH)):
        if calendar.window(session, schedule.window_start, schedule.window_minutes).start <= now:
            return session
    return None


def plan_cron(now: dt.datetime, calendar: TradingCalendar, schedule: ScheduleSettings, run: RunSettings,
              tasks: tuple[TaskSpec, ...], statuses: dict[dt.date, SessionStatus | None]) -> Plan:
    """Today's session inside its window, and (with auto_recover) missed sessions before it."""
    planned: list[PlannedSession] = []
    deferred: list[Deferred] = []
    for session in sessions_in_view(now, calendar, schedule):
        window = calendar.window(session, schedule.window_start, schedule.window_minutes)
        status = statuses.get(session)
        if now < window.start or (status is not None and status.done):
            continue
        if window.contains(now):
            why = f"inside its window ({_local(window.start, calendar)}-{_local(window.end, calendar)})"
        elif not schedule.auto_recover:
            deferred.append(Deferred(session, f"{state_phrase(status, run)}; auto_recover is off (use `recover`)"))
            continue
        elif calendar.market_open_at(now) and not schedule.recover_during_market_hours:
            deferred.append(Deferred(session, f"{state_phrase(status, run)}; catch-up waits for the market to close"))
            continue
        else:
            why = f"catch-up: {describe(status)}"
        if (wait := retry_gate(status, now, run, calendar.tz)) is not None:
            deferred.append(Deferred(session, wait))
            continue
        why = _with_override(why, calendar, session)
        planned.append(PlannedSession(session, pending_tasks(tasks, status), why,
                                      recovery=not window.contains(now)))
    return Plan(apply_catchup_policy(planned, tasks), tuple(deferred))


def plan_manual(now: dt.datetime, calendar: TradingCalendar, tasks: tuple[TaskSpec, ...],
                status: SessionStatus | None, session: dt.date, only: tuple[str, ...] = (),
                force: bool = False) -> Plan:
    """`run --date D [--task T...] [--force]`: one session, whatever the window says."""
    check_session(calendar, session, now)
    unknown = [name for name in only if name not in {t.name for t in tasks}]
    if unknown:
        raise UsageError(f"unknown task '{unknown[0]}': configured tasks are "
                         f"{', '.join(t.name for t in tasks)}")
    if only:
        chosen = tuple(t.name for t in tasks if t.name in only)
        why = f"manual: only {', '.join(chosen)}"
    elif status is not None and status.done and not force:
        return Plan(deferred=(Deferred(session, "already done (use --force to run it again)"),))
    elif force:
        chosen, why = tuple(t.name for t in tasks), "manual, forced: every task"
    else:
        chosen, why = pending_tasks(tasks, status), f"manual: {describe(status)}"
    return Plan((PlannedSession(session, chosen, _with_override(why, calendar, session)),))


def _with_override(reason: str, calendar: TradingCalendar, session: dt.date) -> str:
    """Plans say when an operator's [calendar] override changed the day they are about."""
    note = calendar.override_note(session)
    return f"{reason}; {note}" if note else reason


def plan_recover(sessions: list[dt.date], tasks: tuple[TaskSpec, ...],
                 statuses: dict[dt.date, SessionStatus | None], force: bool = False) -> Plan:
    """`recover`: every given session that is not done (or all, forced), oldest first."""
    planned, deferred = [], []
    for session in sorted(sessions):
        status = statuses.get(session)
        if status is not None and status.done and not force:
            deferred.append(Deferred(session, "done (use --force to run it again)"))
            continue
        chosen = tuple(t.name for t in tasks) if force else pending_tasks(tasks, status)
        planned.append(PlannedSession(session, chosen, "forced" if force and status and status.done
                                      else describe(status), recovery=True))
    return Plan(apply_catchup_policy(planned, tasks), tuple(deferred))


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


def check_session(calendar: TradingCalendar, session: dt.date, now: dt.datetime) -> None:
    today = calendar.local_date(now)
    if session > today:
        raise UsageError(f"{session} is in the future (today is {today} in {calendar.tz.key})")
    if not calendar.is_session(session):
        raise UsageError(calendar.no_session(session))


def pending_tasks(tasks: tuple[TaskSpec, ...], status: SessionStatus | None) -> tuple[str, ...]:
    """Resume: the tasks that have not completed for this session."""
    if status is None or status.corrupt:
        return tuple(t.name for t in tasks)
    return tuple(t.name for t in tasks if not status.completed(t.name))


def apply_catchup_policy(planned: list[PlannedSession], tasks: tuple[TaskSpec, ...]) -> tuple[PlannedSession, ...]:
    """`catchup = "latest"` tasks run only in the newest session of a multi-session catch-up."""
    latest_only = {t.name for t in tasks if t.catchup == "latest"}
    if len(planned) < 2 or not latest_only:
        return tuple(planned)
    newest = planned[-1].session
    out = []
    for p in planned[:-1]:
        skipped = {n: f"catchup = \"latest\": runs for {newest} only" for n in p.tasks if n in latest_only}
        out.append(PlannedSession(p.session, tuple(n for n in p.tasks if n not in skipped), p.reason, skipped,
                                  p.recovery))
    return tuple(out) + (planned[-1],)


def retry_gate(status: SessionStatus | None, now: dt.datetime, run: RunSettings, tz: dt.tzinfo) -> str | None:
    """Why a cron-mode run must not retry this session now, or None when it may.

    "failed, attempt 2 of 5, next try after 17:42", in the exchange's time zone like every
    other time an operator reads (with the date when it is not today's).
    """
    if status is None or status.attempts == 0:
        return None
    if status.attempts >= run.max_attempts:
        return (f"{state_phrase(status, run)}: gave up (max_attempts = {run.max_attempts}); run it by hand with "
                f"`run --date {status.session}`")
    if status.failed and status.completed_at is not None:
        wait = dt.timedelta(minutes=run.retry_backoff_minutes * 2 ** (status.attempts - 1))
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
    return f"failed, attempt {status.attempts} of {run.max_attempts}"


def describe(status: SessionStatus | None) -> str:
    if status is None:
        return "no maintenance recorded"
    if status.corrupt:
        return f"status document unreadable ({status.corrupt})"
    if status.done:
        return "done"
    failed = [n for n, s in status.tasks.items() if s in ("failed", "skipped")]
    if status.unfinished:
        return "interrupted or still running"
    if failed:
        return f"failed ({', '.join(failed)})"
    return "not finished"


def _local(moment: dt.datetime, calendar: TradingCalendar) -> str:
    return moment.astimezone(calendar.tz).strftime("%H:%M")
