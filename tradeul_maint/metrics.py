"""The Prometheus metrics: what monitoring needs to know that maintenance did not happen.

node_exporter's textfile collector reads `*.prom` files from a directory at each scrape.
The tool rewrites its file (`[metrics] textfile`) after every cycle and at every `status`
of the lookback (`status --check` included), atomically (a temporary file in the same
directory, then rename), so a scrape never reads half a file. Where no node_exporter
outlives the run (a Kubernetes CronJob's pod), the same text is pushed to a Pushgateway
(`[metrics] pushgateway`) at the same moments, replacing the group job="tradeul_maint",
key_prefix=<the key prefix> whole. Every value is derived from the same view `status`
shows (overview.py), so the metrics, `status --check` and `recover` agree on which
sessions are not done. The cron tick with nothing to do writes nothing (it stays off
Redis): the shipped schedules run `status --check` every 15 minutes, every day, to keep
the metrics current (their timestamp says when they were written).

A session is counted only when it is a session of the exchange calendar: weekends and
holidays have no window, so nothing is ever "not done" on them, and an alert on
`tradeul_maint_sessions_not_done` needs no calendar of its own.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import redis

from tradeul_maint.calendar import TradingCalendar
from tradeul_maint.files import replace_file
from tradeul_maint.overview import (CORRUPT, DONE, DUE, EXPIRED, FAILED_STATE, INTERRUPTED, MISSING, NOT_YET_DUE,
                                    RUNNING, WAITING, SessionView, StatusView)
from tradeul_maint.state import COMPLETED, FAILED, SKIPPED

if TYPE_CHECKING:
    from tradeul_maint.core import Context
    from tradeul_maint.store import StateStore

NOT_DONE_STATES = (FAILED_STATE, INTERRUPTED, CORRUPT, MISSING, RUNNING, WAITING, EXPIRED)
PUSH_JOB = "tradeul_maint"
JOB_LABEL = "maint_job"  # which of the config's jobs a sample is about
PUSH_TIMEOUT = 5.0  # seconds for a push, all included (DNS, connect, a Pushgateway that never answers)


def render(views: list[StatusView], calendar: TradingCalendar, written: dt.datetime,
           cycles: dict[str, SessionView] | None = None) -> str:
    """The textfile's content for every job's lookback `views`; `cycles`: by job, the session whose cycle just ran
    (by default the newest session of the job's view with a recorded cycle). Every sample about a job carries its
    name as `maint_job`: a label called `job` is Prometheus's own (the Pushgateway replaces it with the group's,
    a scrape renames it `exported_job`)."""
    out: list[str] = []
    cycles = cycles or {}

    def gauge(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
        out.extend(f"{name}{_labels(labels)} {_number(value)}\n" for labels, value in samples)

    def each(sample) -> list[tuple[dict[str, str], float]]:
        return [({JOB_LABEL: view.job, **labels}, value) for view in views for labels, value in sample(view)]

    def last_success(view: StatusView) -> list:
        done = [s for s in view.sessions if s.state == DONE]
        return [({}, calendar.close(done[0].session).timestamp() if done else 0)]

    def cycle_of(view: StatusView) -> SessionView | None:
        return cycles.get(view.job) or next((s for s in view.sessions if s.state not in (MISSING, DUE, NOT_YET_DUE)),
                                            None)

    def finished(view: StatusView) -> list:
        cycle = cycle_of(view)
        # A task left to a later session (catchup) is no failure.
        return [t for t in (cycle.tasks if cycle else ()) if t.status in (COMPLETED, FAILED)
                or (t.status == SKIPPED and not t.note)]

    gauge("tradeul_maint_last_success_session_timestamp_seconds",
          "Close of the newest session of the job's lookback whose maintenance is done (0: none).", each(last_success))
    gauge("tradeul_maint_sessions_not_done",
          "Sessions of the job's lookback whose window has passed and that are not done, by state (status --check "
          "fails on their sum; state=\"running\": a cycle still running past its window; state=\"expired\": a "
          "window missed by a job that does not catch up, until its next session is done).",
          each(lambda view: [({"state": state}, sum(s.state == state for s in view.overdue))
                             for state in NOT_DONE_STATES]))
    gauge("tradeul_maint_cycle_attempts", "Cycles recorded for each session of the job's lookback that is not done.",
          each(lambda view: [({"session": s.session.isoformat()}, s.attempts) for s in reversed(view.sessions)
                             if s.state not in (DONE, NOT_YET_DUE)]))
    gauge("tradeul_maint_session_late_seconds", "How long after its deadline (window start + deadline_minutes) each "
                                                "done session of the job's lookback became done; 0: on time.",
          each(lambda view: [({"session": s.session.isoformat()}, s.late_seconds) for s in reversed(view.sessions)
                             if s.late_seconds is not None]))
    last = "; ".join(f"{view.job + ': ' if len(views) > 1 else ''}{_session(cycle_of(view))}" for view in views)
    gauge("tradeul_maint_task_success", f"1 when the task completed in the job's last cycle ({last}), 0 when it "
                                        "failed or was skipped.",
          each(lambda view: [({"task": t.name}, 1 if t.status == COMPLETED else 0) for t in finished(view)]))
    gauge("tradeul_maint_task_duration_seconds", f"Duration of the task's last attempt ({last}).",
          each(lambda view: [({"task": t.name}, t.duration_seconds) for t in finished(view)
                             if t.duration_seconds is not None]))
    gauge("tradeul_maint_calendar_days_left",
          "Days until the last session of the exchange-calendars calendar: upgrade the library before 0.",
          [({}, (calendar.library_last_session - calendar.local_date(written)).days)])
    gauge("tradeul_maint_metrics_timestamp_seconds", "When this file was written (after a cycle or by "
                                                     "status --check).", [({}, written.timestamp())])
    return "".join(out)


def _session(view: SessionView | None) -> str:
    return f"session {view.session}" if view else "no cycle recorded in the lookback"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (k + '="' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
               for k, v in labels.items())
    return "{" + ",".join(escaped) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))


def publish(context: Context, views: list[StatusView], cycles: dict[str, SessionView] | None = None) -> None:
    """Write the textfile for every job's `views` and push it, as configured; a failure is logged, never raised:
    monitoring must not change what the run did or how it exits."""
    settings = context.settings.metrics
    if settings.textfile is None and settings.pushgateway is None:
        return
    text = render(views, context.calendar, context.clock(), cycles)
    if settings.textfile is not None:
        try:
            replace_file(settings.textfile, text)
        except OSError as exc:
            from loguru import logger

            logger.bind(path=str(settings.textfile), reason=exc.strerror or str(exc)).warning("metrics_write_failed")
    if settings.pushgateway is not None:
        push(settings.pushgateway, text, context.settings.redis.key_prefix)


def push(url: str, text: str, key_prefix: str, timeout: float = PUSH_TIMEOUT) -> bool:
    """PUT the textfile's `text` to the Pushgateway at `url`, as the group job="tradeul_maint", key_prefix=...

    prometheus-client's own `push_to_gateway` sends it (imported here only: the cron tick
    never pushes). It runs in a thread that is abandoned after `timeout` seconds, since
    urllib's timeout bounds each socket operation and not a server that trickles its answer.
    False, and one warning (`metrics_push_failed`, naming the host, never the URL), when
    the Pushgateway is down, refuses the push or does not answer in time.
    """
    from prometheus_client import CollectorRegistry, push_to_gateway
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Parsed(list(text_string_to_metric_families(text))))
    outcome: dict[str, str] = {}

    def send() -> None:
        try:
            push_to_gateway(url, job=PUSH_JOB, registry=registry, grouping_key={"key_prefix": key_prefix},
                            timeout=timeout)
            outcome["ok"] = "1"
        except Exception as exc:  # URLError, HTTP errors (raised as OSError), a malformed URL or reply
            reason = getattr(exc, "reason", None) or exc
            outcome["error"] = f"no answer within {timeout:g}s" if isinstance(reason, TimeoutError) else \
                f"{type(exc).__name__}: {reason}"

    worker = threading.Thread(target=send, name="pushgateway", daemon=True)  # abandoned, not joined, on a hang
    worker.start()
    worker.join(timeout)
    error = outcome.get("error") or (None if "ok" in outcome else f"no answer within {timeout:g}s")
    if error is not None:
        from loguru import logger

        logger.bind(host=_host(url), error=error).warning("metrics_push_failed")
    return error is None


def _host(url: str | None) -> str | None:
    return urlsplit(url).hostname if url else None


class _Parsed:
    """A collector of metric families already made (the textfile's, parsed back), for a registry to push."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self) -> list:
        return self.families


def publish_after_cycle(context: Context, store: StateStore, session: dt.date) -> None:
    """After a cycle of the job of `context`: every job's lookback, and the cycle's session (an older one, for
    `run --date`), read in one round trip per job."""
    if context.settings.metrics.textfile is None and context.settings.metrics.pushgateway is None:
        return
    from tradeul_maint import overview, planner

    now, calendar, settings = context.clock(), context.calendar, context.settings
    views, cycles = [], {}
    try:
        for job in settings.jobs:
            scoped = settings.for_job(job)
            sessions = planner.sessions_in_view(now, calendar, job.schedule)
            mine = job.name == settings.job
            seen = store.job(job.key_prefix).overview(sorted({*sessions, session} if mine else sessions))
            views.append(overview.build(now, calendar, scoped, seen, sessions))
            if mine:
                cycles[job.name] = overview.build(now, calendar, scoped, seen, [session]).sessions[0]
    except (redis.RedisError, OSError) as exc:  # the run goes on (or ends) as it would have without metrics
        from loguru import logger

        logger.bind(path=str(settings.metrics.textfile or ""), pushgateway=_host(settings.metrics.pushgateway),
                    reason=str(exc)).warning("metrics_write_failed")
        return
    publish(context, views, cycles)
