"""Session state in Redis: reads in one round trip, writes fenced on the run lock.

Every write is a Lua script that first checks the lock still holds this runner's token,
so a runner that lost its lease cannot overwrite the state of the runner that took over.
The end of a cycle (status document, `executed` flag, `last_run`) commits in one script.

While a cycle runs, rewriting the whole status document on every transition would cost
in proportion to the number of tasks each time, so a cycle of n tasks would cost n².
Instead one script records a batch of transitions (`record`): each task's state is
overwritten in place in the document (SETRANGE on its fixed-width slot, see
`SessionStatus.layout`), so the legacy `tasks` map is always exact, and each task's
record (state and details) goes to the session's `transitions` hash. The runner rewrites
the document whole at the start and end of the cycle and, while tasks complete, when a
second has passed since it last did, and every whole write empties the hash in the same
script: the document plus the hash is always the complete state. Readers fold the hash
into the document of a session whose cycle is unfinished: a second round trip, only when
such a session exists (a cycle running now, or one whose runner died).
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

import redis

from tradeul_maint.errors import KeyTypeError, LockLostError
from tradeul_maint.keys import Keys
from tradeul_maint.lease import Lease
from tradeul_maint.state import SessionStatus

if TYPE_CHECKING:
    from tradeul_maint.lock import LockHolder

Slots = dict[str, tuple[int, int]]  # task -> (offset, width) of its state in the stored document


def _typed(types: tuple[str, ...], body: str) -> tuple[tuple[str, ...], str]:
    """A script that first checks the Redis type of each of its KEYS, before anything is written.

    Redis does not roll back a script that fails halfway, so a key of another type (another
    application sharing the prefix, a hand) must stop it before its first write: it returns
    {-2, key index, the type found} instead, which `_call` turns into KeyTypeError.
    """
    checks = "".join(f"local t{i} = redis.call('TYPE', KEYS[{i}]).ok\n"
                     f"if t{i} ~= 'none' and t{i} ~= '{want}' then return {{-2, {i}, t{i}}} end\n"
                     for i, want in enumerate(types, start=1))
    return types, checks + body


# KEYS: lock, status, transitions. ARGV: token, document, ttl seconds, lease ms.
WRITE_STATUS = _typed(("string", "string", "hash"), """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
""")

# KEYS: lock, status, transitions. ARGV: token, ttl seconds, lease ms, then per task: name, record,
# offset of its state in the document, the state as its slot holds it. -1: no document to patch.
RECORD_TRANSITIONS = _typed(("string", "string", "hash"), """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
for i = 4, #ARGV, 4 do
  redis.call('SETRANGE', KEYS[2], ARGV[i + 2], ARGV[i + 3])
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
""")

# KEYS: lock, status, executed, last_run, transitions. ARGV: token, document, ttl seconds, lease ms, success, date.
FINISH_CYCLE = _typed(("string", "string", "string", "string", "hash"), """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('DEL', KEYS[5])
if ARGV[5] == '1' then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[3])
else
  redis.call('DEL', KEYS[3])
end
local last = redis.call('GET', KEYS[4])
if not last or last < ARGV[6] then redis.call('SET', KEYS[4], ARGV[6]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
""")


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
        self._lease_ms = Lease(lease_seconds).ms
        self._scripts = {script: (types, client.register_script(body))
                         for script, (types, body) in (("write", WRITE_STATUS), ("record", RECORD_TRANSITIONS),
                                                       ("finish", FINISH_CYCLE))}

    def _call(self, script: str, keys: list[str], args: list) -> int:
        types, run = self._scripts[script]
        result = run(keys=keys, args=args)
        if isinstance(result, list):  # {-2, key index, type found}: nothing was written
            found = result[2].decode() if isinstance(result[2], bytes) else str(result[2])
            raise KeyTypeError(keys[int(result[1]) - 1], found, types[int(result[1]) - 1])
        return int(result)

    @contextmanager
    def _reading(self, sessions: list[dt.date]) -> Iterator[None]:
        """A read that met a key of another type (WRONGTYPE) says which key, as KeyTypeError."""
        try:
            yield
        except redis.ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                self.check_key_types(sessions)
            raise

    def overview(self, sessions: list[dt.date]) -> Overview:
        """What `status` shows, in one round trip: the documents, the lock and its expiry, `last_run`.

        A status key of another type reads as missing (MGET returns nothing for it); a lock or
        `last_run` of another type is a KeyTypeError, as every write to any of them is.
        """
        from tradeul_maint.lock import LockHolder  # here: the cron tick reads statuses without the lock's logging

        pipe = self.client.pipeline(transaction=False)
        # MGET needs a key; not pipe.mget, which a Redis Cluster pipeline refuses (the keys share one slot).
        pipe.execute_command("MGET", *([self.keys.status(s) for s in sessions] or [self.keys.last_run]))
        pipe.get(self.keys.lock)
        pipe.pttl(self.keys.lock)
        pipe.get(self.keys.last_run)
        replies = pipe.execute(raise_on_error=False)
        with self._reading(sessions):
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            raw, lock, lock_ttl, last_run = replies
            statuses = {s: SessionStatus.from_json(s, r) for s, r in zip(sessions, raw)}
            self._fold_transitions(statuses)
        return Overview(statuses, LockHolder.parse(lock, lock_ttl), last_run.decode() if last_run else None)

    def statuses(self, sessions: list[dt.date]) -> dict[dt.date, SessionStatus | None]:
        if not sessions:
            return {}
        raw = self.client.mget([self.keys.status(s) for s in sessions])
        statuses = {s: SessionStatus.from_json(s, r) for s, r in zip(sessions, raw)}
        with self._reading(sessions):
            self._fold_transitions(statuses)
        return statuses

    def _fold_transitions(self, statuses: dict[dt.date, SessionStatus | None]) -> None:
        """Bring the sessions whose cycle is unfinished up to date with their transitions hash.

        The document and its hash are read again together, in one MULTI, so that a whole
        write between the first read and this one (which empties the hash) cannot hide a
        transition: either both are from before it or both from after.
        """
        unfinished = [s for s, status in statuses.items()
                      if status is not None and status.unfinished and status.corrupt is None]
        if not unfinished:
            return
        pipe = self.client.pipeline(transaction=True)
        for session in unfinished:
            pipe.get(self.keys.status(session))
            pipe.hgetall(self.keys.transitions(session))
        replies = pipe.execute()
        for session, raw, transitions in zip(unfinished, replies[::2], replies[1::2]):
            status = SessionStatus.from_json(session, raw)
            if status is not None and status.corrupt is None:
                status.apply_transitions(transitions)
            statuses[session] = status

    def check_key_types(self, sessions: list[dt.date]) -> None:
        """Raise KeyTypeError for the first of the tool's keys (for these sessions) that holds another type."""
        expected = self.keys.expected_types(sessions)
        pipe = self.client.pipeline(transaction=False)
        for key in expected:
            pipe.type(key)
        _raise_wrong_type(expected, pipe.execute())

    def write(self, token: str, status: SessionStatus) -> Slots:
        """The whole document, which takes in (and empties) the transitions hash; returns where its states sit."""
        s = status.session
        document, slots = status.layout()
        ok = self._call("write", [self.keys.lock, self.keys.status(s), self.keys.transitions(s)],
                        [token, document, self._ttl, self._lease_ms])
        if not ok:
            raise LockLostError(_LOST)
        return slots

    def record(self, token: str, status: SessionStatus, tasks: Iterable[str], slots: Slots) -> bool:
        """These tasks' transitions as they are in `status`, in one round trip whatever their number.

        `slots` is what the last `write` of this document returned. False, having written
        nothing, when a task has no slot its state fits in or the document is gone: the
        caller writes the document whole instead.
        """
        args: list[str | int] = [token, self._ttl, self._lease_ms]
        for name in tasks:
            offset, width = slots.get(name, (0, 0))
            state = status.state_slot(name, width) if width else None
            if state is None:
                return False
            args += [name, status.transition_json(name), offset, state]
        result = self._call("record", [self.keys.lock, self.keys.status(status.session),
                                       self.keys.transitions(status.session)], args)
        if result == 0:
            raise LockLostError(_LOST)
        return result == 1

    def finish(self, token: str, status: SessionStatus) -> None:
        s = status.session
        ok = self._call("finish", [self.keys.lock, self.keys.status(s), self.keys.executed(s), self.keys.last_run,
                                   self.keys.transitions(s)],
                        [token, status.to_json(), self._ttl, self._lease_ms, "1" if status.done else "0",
                         s.isoformat()])
        if not ok:
            raise LockLostError(_LOST)


def _raise_wrong_type(expected: dict[str, str], found: list) -> None:
    for (key, want), got in zip(expected.items(), found):
        got = got.decode() if isinstance(got, bytes) else str(got)
        if got not in ("none", want):
            raise KeyTypeError(key, got, want)


_LOST = ("this runner lost the run lock (its lease expired and another runner took over); "
         "it stopped without overwriting that runner's state")
