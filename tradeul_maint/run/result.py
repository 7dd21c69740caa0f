"""What one cycle of one session came to: its status document, the tasks it ran, and the words run and the failure ping say about it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


from tradeul_maint.plan.explain import caught_up
from tradeul_maint.state.document import COMPLETED, FAILED, PENDING, SKIPPED, SessionStatus, TaskRecord


@dataclass
class CycleResult:
    session: dt.date
    status: SessionStatus
    ran: tuple[str, ...]
    seconds: float
    waited_only: bool = False  # it only found data missing (wait_for): no attempt, nothing to say under cron

    @property
    def failures(self) -> dict[str, str]:
        return {name: self.status.details.get(name, TaskRecord()).error or state
                for name, state in self.status.tasks.items() if state in (FAILED, SKIPPED)
                and name in self.ran}

    @property
    def success(self) -> bool:
        return self.status.done

    @property
    def left_to_newest(self) -> set[str]:
        """Tasks skipped with a reason (`catchup = "latest"`): left to the newest session, not failed."""
        return {name for name in self.status.tasks if caught_up(self.status, name)}

    @property
    def waiting(self) -> dict[str, str]:
        """Tasks left pending with a reason: they wait for the close (`market_closed_only`) or for data
        (`wait_for`), not failed."""
        s = self.status
        return {name: s.details[name].reason for name, state in s.tasks.items()
                if state == PENDING and s.details.get(name) and s.details[name].reason}

    def headline(self) -> str:
        """`2026-11-25: 5/6 tasks completed in 3.1s`, as `run` prints it and the failure ping sends it."""
        s, later, waiting = self.status, self.left_to_newest, self.waiting
        completed = sum(state == COMPLETED for state in s.tasks.values())
        data = [n for n in waiting if s.details[n].waiting_since]
        note = f" ({len(later)} left to the newest session: catchup = \"latest\")" if later else ""
        note += f" ({len(waiting) - len(data)} waiting for the close)" if len(waiting) > len(data) else ""
        note += f" ({len(data)} waiting for data)" if data else ""
        return f"{self.session}: {completed}/{len(s.tasks)} tasks completed{note} in {self.seconds:.1f}s"

    def failure_lines(self) -> list[str]:
        """What failed or was skipped among the tasks this run ran, with why: the lines under the headline."""
        return [f"  {name} {self.status.tasks[name]}: {error}" for name, error in self.failures.items()]
