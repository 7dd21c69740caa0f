"""The supervisor's watch on the run lock's lease, so tasks stop before it can pass to another runner.

The runner renews the lease every third of its length (state/lease.py). The supervisor reads
what is left of it itself, through a client of its own: when half of it has passed without
a renewal (the runner paused, or cut off from Redis) no task may run, and every task
process must be gone a margin before the lease can end; when another runner holds the
lock, this run is over.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from tradeul_maint.run.messages import LeaseHeld
from tradeul_maint.state.lease import LEASE_LEFT

IDLE_CHECK = 3600.0  # seconds between looks while no lease is held yet (the runner is taking the lock)


class LeaseWatch:
    """Reads the run lock's remaining lease; `trouble` says why tasks must stop (by `deadline`), or None."""

    def __init__(self) -> None:
        self.held: LeaseHeld | None = None
        self.next_check = time.monotonic() + IDLE_CHECK
        self.expires_at = float("inf")  # at the latest (monotonic)
        self._script: Any = None
        self.trouble: str | None = None  # why no task may run now: the lease is in doubt or gone
        self.deadline = 0.0  # by when the tasks must be gone (monotonic)
        self.lost = False  # another runner holds the lock: for good

    def watch(self, held: LeaseHeld, make_client: Callable[[], Any] | None) -> None:
        """The runner just took the lock: watch its lease from now on."""
        self.held = held
        self.expires_at = time.monotonic() + held.lease.seconds
        self.next_check = time.monotonic() + held.lease.seconds / 4
        client = make_client() if make_client else None
        self._script = client.register_script(LEASE_LEFT) if client is not None else None

    def safe_grace(self, grace: float) -> float:
        """How long stopping may take (at most `grace`) and still end before the lease can pass to another runner."""
        if self.held is None:
            return grace
        return min(grace, max(0.0, self.expires_at - self.held.lease.margin - time.monotonic()))

    def check(self, log) -> None:
        """Look at the lease when it is time to."""
        if self._script is None or time.monotonic() < self.next_check:
            return
        lease = self.held.lease
        self.next_check = time.monotonic() + max(0.05, lease.seconds / 4)
        asked = time.monotonic()
        try:
            left = int(self._script(keys=[self.held.key], args=[self.held.token]))
        except Exception as exc:  # Redis unreachable from here too: trust the last lease seen
            left = None
            error = f"{type(exc).__name__}: {exc}"
        if left == -3:
            self.lost = True
            self._trouble(log, "the run lock was taken over by another runner", asked)
            return
        if left is not None and left >= 0:
            self.expires_at = asked + left / 1000
        if lease.seconds - (self.expires_at - time.monotonic()) > lease.in_doubt_after:
            why = "the run lock's lease was not renewed in time (the runner is paused or cut off from Redis)"
            self._trouble(log, why + (f"; Redis: {error}" if left is None else ""), self.expires_at - lease.margin)
        elif not self.lost:
            self.trouble = None

    def _trouble(self, log, why: str, deadline: float) -> None:
        if self.trouble != why:
            log.bind(reason=why, console=False).error("lease_lost_stopping_tasks")
        self.trouble, self.deadline = why, deadline
