"""Pings, healthchecks-style: `<url>/start` when a cycle starts, `<url>` when it is done, `<url>/fail` when not.

A dead-man's switch outside the cluster: the ping service alerts when the success ping
of a schedule does not arrive, which also covers a scheduler that stopped calling the
tool at all. The failure ping's body is the cycle's summary (what `run` prints), so the
alert says which tasks failed and why.

A ping must never change what a run does: it is sent from a thread of its own and waited
for `ping_timeout` seconds at most, all included (DNS, connect, a server that accepts
and never answers, one that trickles its reply); a ping that fails or is abandoned is
logged to the file (`ping_failed`) and otherwise ignored. The URL is never logged whole:
for healthchecks it is the secret that lets anyone ping.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlsplit

from tradeul_maint import __version__
from tradeul_maint.settings import NotifySettings

if TYPE_CHECKING:
    import datetime as dt

    from tradeul_maint.runner import CycleResult

BODY_LIMIT = 10_000  # characters of the failure summary sent (healthchecks keeps the first 100 kB)


@dataclass(frozen=True)
class Pinger:
    settings: NotifySettings

    def send(self, suffix: str = "", body: str | None = None, session: dt.date | None = None) -> bool:
        """GET `<url><suffix>`, or POST `body`; True when the endpoint answered 2xx within the timeout."""
        url = self.settings.ping_url
        if url is None:
            return False
        outcome: dict[str, str] = {}
        worker = threading.Thread(target=_request, args=(url + suffix, body, self.settings.ping_timeout, outcome),
                                  name="ping", daemon=True)  # abandoned, not joined, when the endpoint hangs
        worker.start()
        worker.join(self.settings.ping_timeout)
        error = outcome.get("error") or (None if "ok" in outcome else f"no answer within "
                                                                       f"{self.settings.ping_timeout:g}s")
        if error is not None:
            from loguru import logger

            logger.bind(console=False, date=session.isoformat() if session else None, ping=suffix or "/",
                        host=urlsplit(url).hostname, error=error).warning("ping_failed")
        return error is None

    def finished(self, result: CycleResult) -> None:
        # A cycle that left only tasks waiting for the close (market_closed_only) failed nothing: the run
        # after the close starts and ends its own cycle. One that only found data missing was no attempt.
        if result.waited_only:
            return
        if result.success or (result.waiting and not result.failures):
            self.send("", session=result.session)
        else:
            self.send("/fail", summary(result), session=result.session)


def _request(url: str, body: str | None, timeout: float, outcome: dict[str, str]) -> None:
    data = body.encode("utf-8")[:BODY_LIMIT] if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"User-Agent": f"tradeul-maint/{__version__}",
                                              "Content-Type": "text/plain; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(1024)
        outcome["ok"] = "1"
    except urllib.error.HTTPError as exc:
        outcome["error"] = f"HTTP {exc.code}"
    except Exception as exc:  # URLError, timeouts, refused connections, a malformed reply: never a traceback
        reason = getattr(exc, "reason", None) or exc
        # urllib's own timeout (per socket operation) may fire a moment before the caller stops waiting.
        outcome["error"] = (f"no answer within {timeout:g}s" if isinstance(reason, TimeoutError)
                            else f"{type(exc).__name__}: {reason}")  # scrubbed when logged: the path is remembered


def summary(result: CycleResult) -> str:
    """The failure ping's body: the run's summary line for the session and each failed or skipped task."""
    from tradeul_maint.redact import scrub

    return scrub("\n".join([f"{result.headline()}; not done", *result.failure_lines()]))


@contextmanager
def cycle(settings: NotifySettings, session: dt.date, start: bool = True) -> Iterator[Pinger]:
    """`/start` now (unless not `start`: a cycle that may only find its data missing, which is no attempt);
    `/fail` if the cycle is stopped by an exception (a signal, a lost lock, a lost Redis).

    The caller sends the cycle's own outcome with `finished(result)`. Each job pings its own
    `[jobs.NAME.notify] ping_url` (by default [notify]'s).
    """
    pinger = Pinger(settings)
    if start:
        pinger.send("/start", session=session)
    try:
        yield pinger
    except BaseException as exc:
        from tradeul_maint.redact import scrub

        pinger.send("/fail", scrub(f"{session}: cycle stopped: {type(exc).__name__}: {exc}"), session=session)
        raise
