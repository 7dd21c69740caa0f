"""Every Redis key the tool uses, built here and nowhere else.

The names match the scheduler service being replaced, so its history stays readable.
For Redis Cluster, a hash-tagged prefix (`{maintenance}`) puts them all in one slot,
which the fenced Lua scripts need.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "maintenance"

    def status(self, session: dt.date) -> str:
        return f"{self.prefix}:status:{session.isoformat()}"

    def executed(self, session: dt.date) -> str:
        return f"{self.prefix}:executed:{session.isoformat()}"

    @property
    def namespace(self) -> str:
        """What every key of the tool begins with; `redis.delete_keys` never deletes a key that does."""
        return f"{self.prefix}:"

    @property
    def last_run(self) -> str:
        return f"{self.prefix}:last_run"

    @property
    def lock(self) -> str:
        return f"{self.prefix}:lock"

    def check(self, token: str) -> str:
        """`check`'s test write: SET NX with a short expiry, deleted at once; no other code reads it."""
        return f"{self.prefix}:check:{token}"

    def expected_types(self, sessions: list[dt.date]) -> dict[str, str]:
        """The Redis type each of the tool's keys must have (when it exists) for these sessions."""
        types = {self.lock: "string", self.last_run: "string"}
        for session in sessions:
            types.update({self.status(session): "string", self.executed(session): "string"})
        return types
