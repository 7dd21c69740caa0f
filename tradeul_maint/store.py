"""Session state in Redis: reads in one round trip, writes fenced on the run lock.

Every write is a Lua script that first checks the lock still holds this runner's token,
so a runner that lost its lease cannot overwrite the state of the runner that took over.
The end of a cycle (status document, `executed` flag, `last_run`) commits in one script.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import redis

from tradeul_maint.errors import LockLostError
from tradeul_maint.keys import Keys
from tradeul_maint.lock import LockHolder
from tradeul_maint.state import SessionStatus

# KEYS: lock, status. ARGV: token, document, ttl seconds, lease ms.
WRITE_STATUS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: lock, status, executed, last_run. ARGV: token, document, ttl seconds, lease ms, success, date.
FINISH_CYCLE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if ARGV[5] == '1' then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[3])
else
  redis.call('DEL', KEYS[3])
end
local last = redis.call('GET', KEYS[4])
if not last or last < ARGV[6] then redis.call('SET', KEYS[4], ARGV[6]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class Overview:
    """What `status` and the planner need, read in one round trip."""

    statuses: dict[dt.date, SessionStatus | None]
    holder: LockHolder | None
    last_run: str | None


class StateStore:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_days: int, lease_seconds: float):
        self.client = client
        self.keys = keys
        self._ttl = ttl_days * 86400
        self._lease_ms = max(100, int(lease_seconds * 1000))
        self._write = client.register_script(WRITE_STATUS)
        self._finish = client.register_script(FINISH_CYCLE)

    def overview(self, sessions: list[dt.date]) -> Overview:
        pipe = self.client.pipeline(transaction=False)
        if sessions:
            pipe.mget([self.keys.status(s) for s in sessions])
        pipe.get(self.keys.lock)
        pipe.get(self.keys.last_run)
        *raw, lock, last_run = pipe.execute()
        statuses = {s: SessionStatus.from_json(s, r) for s, r in zip(sessions, raw[0] if raw else [])}
        return Overview(statuses, LockHolder.parse(lock), last_run.decode() if last_run else None)

    def statuses(self, sessions: list[dt.date]) -> dict[dt.date, SessionStatus | None]:
        if not sessions:
            return {}
        raw = self.client.mget([self.keys.status(s) for s in sessions])
        return {s: SessionStatus.from_json(s, r) for s, r in zip(sessions, raw)}

    def write(self, token: str, status: SessionStatus) -> None:
        ok = self._write(keys=[self.keys.lock, self.keys.status(status.session)],
                         args=[token, status.to_json(), self._ttl, self._lease_ms])
        if not ok:
            raise LockLostError(_LOST)

    def finish(self, token: str, status: SessionStatus) -> None:
        s = status.session
        ok = self._finish(keys=[self.keys.lock, self.keys.status(s), self.keys.executed(s), self.keys.last_run],
                          args=[token, status.to_json(), self._ttl, self._lease_ms,
                                "1" if status.done else "0", s.isoformat()])
        if not ok:
            raise LockLostError(_LOST)


_LOST = ("this runner lost the run lock (its lease expired and another runner took over); "
         "it stopped without overwriting that runner's state")
