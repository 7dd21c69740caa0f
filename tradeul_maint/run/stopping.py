"""How a run is told to stop: SIGTERM, SIGINT and SIGHUP, and the run's deadline ([run] max_run_minutes)."""

from __future__ import annotations

import signal
import threading
import time


from tradeul_maint.base.errors import EXIT_RUN_DEADLINE, SIGNAL_EXIT_CODES


class Interrupted(Exception):
    """The run was stopped by SIGTERM, SIGINT or SIGHUP, or by its deadline; its state says what did not complete."""

    def __init__(self, why: str, exit_code: int):
        super().__init__(why)
        self.exit_code = exit_code


class StopSignals:
    """Turns SIGTERM, SIGINT and SIGHUP, and the run's deadline, into a stop request, which the cycle notices
    within POLL_SECONDS.

    The first signal (or the deadline, `[run] max_run_minutes` after the run started) decides
    the exit code; more signals while stopping change nothing. The task processes are in
    sessions of their own, so a terminal's signals reach only the runner, which stops them
    through the supervisor. A deadline stops a run exactly as a signal does (its tasks
    stopped, then recorded as interrupted), and exits EXIT_RUN_DEADLINE.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self, max_run_minutes: float | None = None) -> None:
        self.reason: str | None = None  # what stopped the run first: "SIGTERM", "[run] max_run_minutes = 240"
        self.exit_code = 0
        self._deadline = time.monotonic() + max_run_minutes * 60 if max_run_minutes else None
        self._max_run_minutes = max_run_minutes
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self._stop(signal.Signals(signum).name, SIGNAL_EXIT_CODES.get(signum, 128 + signum))

    def _stop(self, reason: str, exit_code: int) -> None:
        if self.reason is None:
            self.reason, self.exit_code = reason, exit_code

    @property
    def requested(self) -> bool:
        """Whether the run must stop: a signal came, or (looked at now) its deadline has passed."""
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._stop(f"[run] max_run_minutes = {self._max_run_minutes:g}", EXIT_RUN_DEADLINE)
        return self.reason is not None

    def check(self) -> None:
        if self.requested:
            raise Interrupted(self.reason, self.exit_code)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
