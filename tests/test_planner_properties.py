"""Properties of the planner (pure: now, calendar, settings, stored states -> plan), checked with hypothesis.

Random settings (windows as wall time and as close±N, lookbacks 1-30, auto_recover, market
hours, max_attempts, backoff), random calendar overrides (closed days, early closes), random
states per session (missing, done, failed after k attempts at some time, interrupted,
corrupt, partly completed: a fault calendar in effect), random moments near the windows.
Each property is what the README promises about `run`, `recover` and the retry gate.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from tradeul_maint.base.errors import UsageError
from tradeul_maint.config.settings import CalendarOverrides, RunSettings, ScheduleSettings, TaskSpec, WindowStart
from tradeul_maint.plan import planner
from tradeul_maint.plan import horizon
from tradeul_maint.plan import explain
from tradeul_maint.plan.calendar import TradingCalendar, load_calendar
from tradeul_maint.state.document import COMPLETED, FAILED, IN_PROGRESS, PENDING, SessionStatus

UTC = dt.timezone.utc
NY = ZoneInfo("America/New_York")
FIRST, LAST = dt.date(2025, 12, 1), dt.date(2027, 1, 31)
TASKS = (TaskSpec("a", command=("true",)), TaskSpec("b", command=("true",), after=("a",)),
         TaskSpec("c", command=("true",), catchup="latest"))
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_calendars: dict[tuple, TradingCalendar] = {}
_cache: list = []  # the session's calendar cache directory, for the strategies (which cannot take fixtures)


@pytest.fixture(autouse=True, scope="module")
def cache(calendar_cache):
    _cache[:] = [calendar_cache]
    return calendar_cache


def make_calendar(closed: frozenset[dt.date], early: dict[dt.date, dt.time]) -> TradingCalendar:
    key = (closed, tuple(sorted(early.items())))
    if key not in _calendars:
        _calendars[key] = load_calendar("XNYS", CalendarOverrides(closed=closed, early_closes=early), _cache[0])
    return _calendars[key]


# --- strategies --------------------------------------------------------------------------

weekdays_2026 = st.dates(min_value=dt.date(2026, 1, 5), max_value=dt.date(2026, 12, 30)).filter(
    lambda d: d.weekday() < 5)

window_starts = st.one_of(
    st.builds(lambda h, m: WindowStart(wall_time=dt.time(h, m)), st.integers(0, 23), st.sampled_from([0, 5, 30, 45])),
    st.builds(lambda m: WindowStart(close_offset=dt.timedelta(minutes=m)),
              st.integers(-6 * 60, 24 * 60).map(lambda m: m - m % 5)),
)

schedules = st.builds(
    ScheduleSettings,
    calendar=st.just("XNYS"),
    window_start=window_starts,
    window_minutes=st.integers(1, 600),
    lookback_sessions=st.one_of(st.integers(1, 3), st.integers(1, 30)),
    auto_recover=st.booleans(),
    recover_during_market_hours=st.booleans(),
)

runs = st.builds(RunSettings, max_parallel=st.just(1), max_attempts=st.integers(1, 6),
                 retry_backoff_minutes=st.sampled_from([0, 1, 5, 7.5, 30, 120]))


@st.composite
def overrides(draw):
    closed = frozenset(draw(st.lists(weekdays_2026, max_size=4)))
    base = make_calendar(frozenset(), {})
    early = {d: dt.time(13, 0) for d in draw(st.lists(weekdays_2026, max_size=3))
             if d not in closed and base.is_session(d)}
    return closed, early


@st.composite
def status_for(draw, session: dt.date, around: dt.datetime):
    """One session's stored state: a fault calendar entry."""
    kind = draw(st.sampled_from(["missing", "missing", "done", "failed", "interrupted", "corrupt", "partial"]))
    if kind == "missing":
        return None
    if kind == "corrupt":
        return SessionStatus(session, corrupt="not a JSON object")
    started = around - dt.timedelta(minutes=draw(st.integers(0, 72 * 60)))
    attempts = draw(st.integers(1, 7))
    if kind == "done":
        return SessionStatus(session, started_at=started, completed_at=started + dt.timedelta(minutes=3),
                             all_success=True, tasks={t.name: COMPLETED for t in TASKS}, attempts=attempts)
    if kind == "interrupted":
        return SessionStatus(session, started_at=started, tasks={"a": COMPLETED, "b": IN_PROGRESS, "c": PENDING},
                             attempts=attempts)
    states = draw(st.lists(st.sampled_from([COMPLETED, FAILED, "skipped", PENDING]), min_size=3, max_size=3))
    if kind == "failed" and all(s == COMPLETED for s in states):
        states[1] = FAILED
    return SessionStatus(session, started_at=started, completed_at=started + dt.timedelta(minutes=2),
                         all_success=False, tasks=dict(zip("abc", states)), attempts=attempts)


@st.composite
def worlds(draw):
    """(now, calendar, schedule, run settings, statuses of the 40 sessions up to today)."""
    closed, early = draw(overrides())
    calendar = make_calendar(closed, early)
    schedule = draw(schedules)
    run = draw(runs)
    # Moments near a window: a session, then an offset around its window's start (or anywhere in the year).
    session = draw(st.sampled_from(calendar.sessions_between(dt.date(2026, 1, 10), dt.date(2026, 12, 28))))
    start = calendar.window(session, schedule.window_start, schedule.window_minutes).start
    now = draw(st.one_of(
        st.integers(-90, schedule.window_minutes + 90).map(lambda m: start + dt.timedelta(minutes=m)),
        st.integers(-3 * 24 * 60, 3 * 24 * 60).map(lambda m: start + dt.timedelta(minutes=m)),
    ))
    today = calendar.local_date(now)
    sessions = calendar.sessions_up_to(today + dt.timedelta(days=2), 40)
    statuses = {s: draw(status_for(s, now)) for s in sessions}
    return now, calendar, schedule, run, statuses


def in_view(now, calendar, schedule) -> list[dt.date]:
    """What `run` and `recover` must look at, stated independently of the planner: the last
    `lookback_sessions` sessions up to today and, whatever the lookback, the newest session whose
    window has opened (issue 10 item 15: a window after midnight, or before today's window)."""
    today = calendar.local_date(now)
    view = set(calendar.sessions_up_to(today, schedule.lookback_sessions))
    opened = [s for s in calendar.sessions_between(today - dt.timedelta(days=7), today)
              if calendar.window(s, schedule.window_start, schedule.window_minutes).start <= now]
    return sorted(view | set(opened[-1:]))


def newest_opened(now, calendar, schedule) -> dt.date | None:
    """The newest session whose window has opened, looked for a week back."""
    today = calendar.local_date(now)
    opened = [s for s in calendar.sessions_between(today - dt.timedelta(days=7), today)
              if calendar.window(s, schedule.window_start, schedule.window_minutes).start <= now]
    return opened[-1] if opened else None


def open_windows(now, calendar, schedule) -> list[dt.date]:
    """Every session whose window contains `now` (looked for well beyond any lookback)."""
    today = calendar.local_date(now)
    return [s for s in calendar.sessions_between(today - dt.timedelta(days=5), today + dt.timedelta(days=1))
            if calendar.window(s, schedule.window_start, schedule.window_minutes).contains(now)]


# --- plan_cron ---------------------------------------------------------------------------


@SETTINGS
@given(worlds())
def test_cron_never_plans_a_non_session_nor_a_done_session_and_goes_oldest_first(world):
    now, calendar, schedule, run, statuses = world
    plan = planner.plan_cron(now, calendar, schedule, run, TASKS, statuses)
    days = [p.session for p in plan.sessions]
    assert days == sorted(set(days)), days
    for p in plan.sessions:
        assert p.session.weekday() < 5 and p.session not in calendar.overrides.closed
        assert calendar.is_session(p.session)
        status = statuses.get(p.session)
        assert status is None or not status.done, (p.session, status)
        window = calendar.window(p.session, schedule.window_start, schedule.window_minutes)
        assert window.start <= now, (p.session, window, now)  # never before its window opens
        assert p.recovery == (not window.contains(now))
        assert planner.retry_gate(status, now, run, calendar.tz) is None
    # Catch-ups come before the session whose window is open.
    flags = [p.recovery for p in plan.sessions]
    assert flags == sorted(flags, reverse=True)


@SETTINGS
@given(worlds())
def test_cron_recovers_only_when_allowed_and_catches_up_every_missed_session_in_view(world):
    now, calendar, schedule, run, statuses = world
    plan = planner.plan_cron(now, calendar, schedule, run, TASKS, statuses)
    planned = {p.session for p in plan.sessions}
    may_recover = schedule.auto_recover and (schedule.recover_during_market_hours or not calendar.market_open_at(now))
    if not may_recover:
        assert not [p for p in plan.sessions if p.recovery]
    for s in in_view(now, calendar, schedule):
        window = calendar.window(s, schedule.window_start, schedule.window_minutes)
        status = statuses.get(s)
        due = window.start <= now and (status is None or not status.done) and \
            planner.retry_gate(status, now, run, calendar.tz) is None
        if due and (window.contains(now) or may_recover):
            assert s in planned, (s, explain.describe(status), now)


def issue_15_world():
    """Issue 10 item 15: lookback 1, window_start = close+9h, Wednesday 01:05 (Tuesday's window is open)."""
    calendar = make_calendar(frozenset(), {})
    schedule = ScheduleSettings(window_start=WindowStart(close_offset=dt.timedelta(hours=9)), lookback_sessions=1)
    now = dt.datetime(2026, 11, 25, 1, 5, tzinfo=calendar.tz).astimezone(UTC)
    return now, calendar, schedule, RunSettings(), {}


@SETTINGS
@given(worlds())
@example("issue 10 item 15")
def test_the_session_whose_window_is_open_is_planned_iff_not_done_and_the_retry_gate_allows(world):
    now, calendar, schedule, run, statuses = issue_15_world() if world == "issue 10 item 15" else world
    plan = planner.plan_cron(now, calendar, schedule, run, TASKS, statuses)
    planned = {p.session for p in plan.sessions}
    for s in open_windows(now, calendar, schedule):
        status = statuses.get(s)
        expected = (status is None or not status.done) and planner.retry_gate(status, now, run, calendar.tz) is None
        assert (s in planned) == expected, (s, explain.describe(status), now.isoformat(), schedule)


@pytest.mark.parametrize("lookback", [1, 2])
def test_a_window_after_midnight_is_in_view_with_any_lookback(calendar_cache, lookback):
    """Issue 10 item 15: window_start = close+9h puts Tuesday's window at Wednesday 01:00-01:30."""
    calendar = load_calendar("XNYS", CalendarOverrides(), calendar_cache)
    schedule = ScheduleSettings(window_start=WindowStart(close_offset=dt.timedelta(hours=9)),
                                lookback_sessions=lookback)
    now = dt.datetime(2026, 11, 25, 1, 5, tzinfo=calendar.tz).astimezone(UTC)  # Wednesday 01:05
    assert calendar.window(dt.date(2026, 11, 24), schedule.window_start, 30).contains(now)
    plan = planner.plan_cron(now, calendar, schedule, RunSettings(), TASKS, {})
    assert [p.session for p in plan.sessions][-1:] == [dt.date(2026, 11, 24)], plan


@SETTINGS
@given(worlds())
def test_cron_plans_exactly_the_tasks_not_completed_and_latest_only_tasks_for_the_newest(world):
    """`catchup = "latest"` (task c) runs only for the newest session whose window has opened, whatever else
    the plan holds; an older session records it skipped."""
    now, calendar, schedule, run, statuses = world
    plan = planner.plan_cron(now, calendar, schedule, run, TASKS, statuses)
    newest = newest_opened(now, calendar, schedule)
    for p in plan.sessions:
        status = statuses.get(p.session)
        pending = [t.name for t in TASKS if status is None or status.corrupt or not status.completed(t.name)]
        older = newest is not None and p.session < newest
        expected = [n for n in pending if not (older and n == "c")]
        assert list(p.tasks) == expected, (p, explain.describe(status))
        assert set(p.catchup_skipped) == ({"c"} & set(pending) if older else set())


# --- retry gate --------------------------------------------------------------------------


@SETTINGS
@given(runs, st.integers(0, 8), st.booleans(), st.integers(-600, 6000))
def test_the_retry_gate_waits_for_the_doubling_backoff_and_stops_at_max_attempts(run, attempts, finished, minutes):
    session = dt.date(2026, 11, 25)
    completed = dt.datetime(2026, 11, 25, 22, 3, tzinfo=UTC)
    status = SessionStatus(session, started_at=completed - dt.timedelta(minutes=3),
                           completed_at=completed if finished else None, all_success=False,
                           tasks={"a": FAILED if finished else IN_PROGRESS}, attempts=attempts)
    now = completed + dt.timedelta(minutes=minutes)
    gate = planner.retry_gate(status, now, run, NY)
    if attempts == 0:
        assert gate is None
    elif attempts >= run.max_attempts:
        assert gate is not None and "gave up" in gate
    elif finished:
        wait = dt.timedelta(minutes=run.retry_backoff_minutes * 2 ** (attempts - 1))
        assert (gate is None) == (now >= completed + wait), (gate, attempts, run)
    else:
        assert gate is None  # interrupted: retried at once
    assert planner.retry_gate(None, now, run, NY) is None


# --- recover and manual runs ---------------------------------------------------------------


@SETTINGS
@given(worlds(), st.booleans())
def test_recover_plans_every_session_not_done_oldest_first_and_only_those_whose_window_passed(world, force):
    now, calendar, schedule, run, statuses = world
    try:
        sessions, deferred = horizon.recovery_sessions(now, calendar, schedule)
    except UsageError:
        return
    assert sorted(sessions + [d.session for d in deferred]) == in_view(now, calendar, schedule)
    for s in sessions:
        assert calendar.window(s, schedule.window_start, schedule.window_minutes).end <= now
    for d in deferred:
        assert calendar.window(d.session, schedule.window_start, schedule.window_minutes).end > now
    plan = planner.plan_recover(now, calendar, schedule, TASKS, sessions, statuses, force)
    days = [p.session for p in plan.sessions]
    assert days == sorted(days)
    for s in sessions:
        status = statuses.get(s)
        done = status is not None and status.done
        assert (s in days) == (force or not done), (s, explain.describe(status))


@SETTINGS
@given(worlds(), st.dates(min_value=dt.date(2026, 1, 2), max_value=dt.date(2026, 12, 31)))
def test_recover_since_until_stays_inside_the_range_and_on_sessions(world, since):
    now, calendar, schedule, run, statuses = world
    today = calendar.local_date(now)
    try:
        sessions, deferred = horizon.recovery_sessions(now, calendar, schedule, since, None)
    except UsageError as exc:
        assert since > today or "no XNYS trading session" in str(exc), exc
        return
    for s in sessions + [d.session for d in deferred]:
        assert since <= s <= today and calendar.is_session(s)


@SETTINGS
@given(worlds(), st.dates(min_value=dt.date(2026, 1, 2), max_value=dt.date(2026, 12, 31)), st.booleans())
def test_a_manual_run_refuses_a_non_session_or_future_date_and_skips_a_done_session_unless_forced(world, day, force):
    now, calendar, schedule, run, statuses = world
    status = statuses.get(day)
    try:
        plan = planner.plan_manual(now, calendar, schedule, TASKS, status, day, (), force)
    except UsageError:
        assert day > calendar.local_date(now) or not calendar.is_session(day)
        return
    assert day <= calendar.local_date(now) and calendar.is_session(day)
    done = status is not None and status.done
    assert bool(plan.sessions) == (force or not done)
