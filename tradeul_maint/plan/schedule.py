"""Which task of a cycle starts next: the dependency graph of one session's planned tasks.

Pure and incremental, so that a cycle of 1,000 tasks costs the same per task as one of 10:
each task counts the dependencies it still waits for, a completion makes its dependents
ready in time proportional to their number, and a failure blocks its dependents (and
theirs) the same way. Ready tasks start in a fixed priority order (`priority_order`):
configuration order with one worker; with several, the longest remaining path first,
weighted by each task's last known duration, which starts the critical path as early as
the width allows (list scheduling by critical path).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence

from tradeul_maint.config.settings import TaskSpec
from tradeul_maint.state.document import SessionStatus

UNKNOWN_DURATION = 1.0  # seconds assumed for a task that never recorded one


class Schedule:
    """The planned tasks of one cycle, in priority order, and what each waits for.

    `done_before` are the tasks completed in an earlier cycle of the session and not run
    again: a dependency on one of them is met. A dependency on a task that is neither
    planned nor done blocks its dependents, as does one that fails or is skipped.
    """

    def __init__(self, order: Sequence[str], specs: Mapping[str, TaskSpec], done_before: Collection[str]):
        self._rank = {name: i for i, name in enumerate(order)}
        self._specs = specs
        self._done_before = done_before
        self._waiting: dict[str, int] = {}  # planned tasks not started yet -> dependencies still to complete
        self._dependents: dict[str, list[str]] = {name: [] for name in order}
        self._ready: list[tuple[int, str]] = []  # a heap by rank
        self._blocked: list[tuple[str, str]] = []  # (task, the dependency that blocks it), not taken yet
        self._failed: set[str] = set()
        for name in order:
            waits = 0
            for dep in specs[name].after:
                if dep in self._rank:
                    self._dependents[dep].append(name)
                    waits += 1
            self._waiting[name] = waits
        for name in order:
            if name not in self._waiting:
                continue  # already blocked, through a task before it
            if any(dep not in self._rank and dep not in done_before for dep in specs[name].after):
                self._block(name)
            elif self._waiting[name] == 0:
                heapq.heappush(self._ready, (self._rank[name], name))

    @property
    def pending(self) -> int:
        """Tasks neither started nor blocked yet."""
        return len(self._waiting)

    def take_blocked(self) -> list[tuple[str, str]]:
        """The tasks that can no longer run in this cycle, each with the dependency that blocks it."""
        blocked, self._blocked = self._blocked, []
        return blocked

    def take_ready(self, limit: int) -> list[str]:
        """Up to `limit` tasks whose dependencies have all completed, highest priority first; they count as started."""
        started = []
        while self._ready and len(started) < limit:
            _, name = heapq.heappop(self._ready)
            del self._waiting[name]
            started.append(name)
        return started

    def completed(self, name: str) -> None:
        for child in self._dependents.get(name, ()):
            if child in self._waiting:
                self._waiting[child] -= 1
                if self._waiting[child] == 0:
                    heapq.heappush(self._ready, (self._rank[child], child))

    def failed(self, name: str) -> None:
        """`name` failed or was skipped: whatever waits for it, directly or not, is blocked."""
        self._failed.add(name)
        self._cascade(name)

    def _block(self, name: str) -> None:
        del self._waiting[name]
        # The first dependency, in the task's own order, that failed or will never complete here.
        blocker = next(dep for dep in self._specs[name].after if dep in self._failed or
                       (dep not in self._rank and dep not in self._done_before))
        self._blocked.append((name, blocker))
        self._failed.add(name)
        self._cascade(name)

    def _cascade(self, name: str) -> None:
        stack = [name]  # a loop, not recursion: a chain may be thousands of tasks long
        while stack:
            for child in self._dependents.get(stack.pop(), ()):
                if child in self._waiting:
                    del self._waiting[child]
                    blocker = next(dep for dep in self._specs[child].after if dep in self._failed)
                    self._blocked.append((child, blocker))
                    self._failed.add(child)
                    stack.append(child)


def priority_order(names: Sequence[str], specs: Mapping[str, TaskSpec], durations: Mapping[str, float],
                   parallel: int) -> list[str]:
    """The order ready tasks start in: configuration order with one worker, else critical path first.

    With several workers, a task's priority is the longest path from its start to the end
    of the cycle, its own duration included (the last known one, UNKNOWN_DURATION when
    never recorded); ties keep configuration order.
    """
    if parallel <= 1:
        return list(names)
    planned = set(names)
    dependents: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        for dep in specs[n].after:
            if dep in planned:
                dependents[dep].append(n)
    path: dict[str, float] = {}
    for n in after_all(names, dependents):
        path[n] = durations.get(n, UNKNOWN_DURATION) + max((path[c] for c in dependents[n]), default=0.0)
    position = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (-path[n], position[n]))


def after_all(names: Sequence[str], edges: Mapping[str, Sequence[str]]) -> list[str]:
    """`names` ordered so that each comes after all those `edges` maps it to (its dependents here, its
    dependencies in the planner); no recursion: graphs may be deep."""
    order: list[str] = []
    seen: set[str] = set()
    for root in names:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(edges[root]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                order.append(node)
            elif child not in seen:
                seen.add(child)
                stack.append((child, iter(edges[child])))
    return order


def known_durations(statuses: Iterable[SessionStatus | None]) -> dict[str, float]:
    """Each task's most recent recorded duration: from the first status (newest first) that has one."""
    durations: dict[str, float] = {}
    for status in statuses:
        if status is None or status.corrupt:
            continue
        for name, record in status.details.items():
            if name not in durations and record.duration_seconds:
                durations[name] = record.duration_seconds
    return durations

