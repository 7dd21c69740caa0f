"""What every command needs before its work: the settings, the calendar and the time (a Context), and Redis.

The cron tick with nothing to do needs only these and the planner, and must not pay for more (see
cli/main.py): the runner, the lock, the status view and loguru are imported by the functions that
use them.
"""

from __future__ import annotations

import datetime as dt
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

import redis

from tradeul_maint.base.errors import ConfigError, RedisRefusedWriteError, RedisUnavailableError, UsageError
from tradeul_maint.config.settings import Job, Settings
from tradeul_maint.plan import horizon
from tradeul_maint.plan.calendar import TradingCalendar, load_calendar
from tradeul_maint.redisio.connection import open_redis
from tradeul_maint.redisio.keys import Keys
from tradeul_maint.redisio.replicas import Replication
from tradeul_maint.state.store import StateStore


UTC = dt.timezone.utc


@dataclass(frozen=True)
class Context:
    """What every command needs before it talks to Redis."""

    settings: Settings
    calendar: TradingCalendar
    now: dt.datetime
    # When this command started: `clock` must not drift with the age of the process (tests run many commands).
    started: float = field(default_factory=time.monotonic, compare=False)

    def clock(self) -> dt.datetime:
        """`now`, advancing with real time, so --now simulations record sensible durations."""
        return self.now + dt.timedelta(seconds=time.monotonic() - self.started)

    def for_job(self, job: Job) -> Context:
        """This context as one job sees it (Settings.for_job): the same calendar, time and clock."""
        return replace(self, settings=self.settings.for_job(job))


def prepare(settings: Settings, now_text: str | None) -> Context:
    ctx = load_context(settings, now_text)
    if warning := ctx.calendar.expiry_warning(ctx.now):
        from loguru import logger

        # In the file on every command; on the console only where a person reads (status, calendar,
        # dry runs), since cron would mail it every few minutes for a month.
        logger.bind(console=False, last_session=str(ctx.calendar.library_last_session)).warning(
            "calendar_expiring", detail=warning)
    return ctx


def load_context(settings: Settings, now_text: str | None) -> Context:
    calendar = load_calendar(settings.schedule.calendar, settings.calendar, settings.state_dir / "cache",
                             prebuilt=settings.calendar_cache)
    check_ttl(settings, calendar)
    return Context(settings, calendar, parse_now(now_text, calendar))


def parse_now(text: str | None, calendar: TradingCalendar) -> dt.datetime:
    """ISO 8601; a naive time is exchange-local. None (not given) means the real current time."""
    if text is None:
        return dt.datetime.now(UTC)
    try:
        moment = dt.datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=calendar.tz)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):  # not a time, or one that UTC cannot hold (9999-12-31T23:59 local)
        raise UsageError(f"--now {text!r}: expected an ISO 8601 time like 2026-11-27T17:05 or "
                         "2026-11-27T22:05:00+00:00") from None


def check_ttl(settings: Settings, calendar: TradingCalendar) -> None:
    """Everything each job's lookback can reach must still be in Redis (see horizon.sessions_in_view)."""
    lookback = max((job.schedule.lookback_sessions for job in settings.jobs),
                   default=settings.schedule.lookback_sessions)
    needed = calendar.max_span_days(horizon.sessions_reached(lookback)) + 1
    if settings.redis.status_ttl_days < needed:
        raise ConfigError(
            f"[redis] status_ttl_days = {settings.redis.status_ttl_days} is shorter than the "
            f"{lookback} sessions of lookback can span on {calendar.code} "
            f"({needed} days): raise it to at least {needed}")


@contextmanager
def connected(ctx: Context) -> Iterator[StateStore]:
    s = ctx.settings
    try:
        with open_redis(s.redis.url, s.state_dir, password_file=s.redis.password_file,
                        key_prefix=s.redis.key_prefix) as (client, _where):
            if len(s.jobs) > 1:
                from tradeul_maint.redisio.connection import check_cluster_prefix
                from tradeul_maint.redisio.hello import is_cluster

                if is_cluster(client):  # every job's keys, each job's in one slot
                    for job in s.jobs:
                        check_cluster_prefix(job.key_prefix)
            yield StateStore(client, Keys(s.key_prefix), s.redis.status_ttl_days, s.redis.lock_lease_seconds,
                             Replication(s.redis.min_replicas, s.redis.replica_timeout_seconds, s.redis.wait_aof))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnavailableError(f"lost the connection to Redis: {str(exc).strip() or type(exc).__name__}") \
            from None
    except redis.ResponseError as exc:
        if (why := refused(exc)) is None:
            raise
        raise RedisRefusedWriteError(f"Redis refused the tool's commands: {why}; nothing was recorded as done that "
                                     "did not finish, and the next run resumes") from None


# Error codes of a Redis that is working but cannot take writes (or commands) right now.
REFUSALS = {
    "READONLY": "it is a read-only replica (READONLY; after a failover, point the URL at the new master or use "
                "Sentinel)",
    "NOREPLICAS": "not enough replicas acknowledge writes (NOREPLICAS, min-replicas-to-write)",
    "OOM": "it is out of memory (OOM, maxmemory with noeviction)",
    "MISCONF": "it cannot persist its data and refuses writes (MISCONF; see the Redis server log)",
    "LOADING": "it is loading its dataset (LOADING)",
    "MASTERDOWN": "its master is down (MASTERDOWN)",
    "BUSY": "it is busy running a script (BUSY)",
    "CLUSTERDOWN": "the cluster is down (CLUSTERDOWN)",
    "TRYAGAIN": "the cluster is resharding (TRYAGAIN)",
    "MOVED": "the cluster is moving the tool's hash slot (MOVED)",
}


def refused(exc: redis.ResponseError) -> str | None:
    """Why Redis refused a command for a passing state of its own (exit 75), or None for anything else.

    redis-py turns some codes into classes (and drops the code from the text); others lead the
    message, or follow a "-" inside a script's error ("... @user_script: 1: -READONLY ...").
    """
    classes = {redis.exceptions.ReadOnlyError: "READONLY", redis.exceptions.OutOfMemoryError: "OOM",
               redis.exceptions.BusyLoadingError: "LOADING",
               # With min_replicas the writes go to the slot's primary directly (redisio/replicas.py), MOVED and all.
               redis.exceptions.AskError: "MOVED"}
    code = next((c for cls, c in classes.items() if isinstance(exc, cls)), None)
    if code is None:
        text = str(exc)
        code = next((c for c in REFUSALS if text.startswith(c + " ") or f"-{c} " in text), None)
    return REFUSALS.get(code)
