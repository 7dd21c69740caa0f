"""Session state in Redis: reads in one round trip, writes fenced on the run lock.

Every write is a Lua script that first checks the lock still holds this runner's token,
so a runner that lost its lease cannot overwrite the state of the runner that took over.
Each scheduling step of a cycle rewrites the session's status document whole (`write`),
so the document alone is the session's state at every moment, readable with one GET; the
end of a cycle (status document, `executed` flag, `last_run`) commits in one script. With
`[redis] min_replicas`, each script is followed by WAIT on its connection (redisio/replicas.py).
Without, a step's script is sent and the step's log lines are written while Redis runs it
(`_overlapped`); its reply is read before the step's tasks may run (run/gate.py).

An older version kept each task's latest record in a `transitions` hash between whole
writes; a runner of it that died mid-cycle leaves one behind. Its document's `tasks` map
was exact at every step, so ignoring the hash loses no state, only the details (durations,
errors) of the tasks that ended since its last whole write; the hash expires with its TTL.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import redis
from redis.commands.core import Script

from tradeul_maint.base.errors import KeyTypeError, LockLostError
from tradeul_maint.redisio.keys import Keys
from tradeul_maint.redisio.replicas import Replication
from tradeul_maint.state.document import SessionStatus
from tradeul_maint.state.lease import Lease

if TYPE_CHECKING:
    from tradeul_maint.state.lock import LockHolder

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


# KEYS: lock, status. ARGV: token, document, ttl seconds, lease ms.
WRITE_STATUS = _typed(("string", "string"), """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
""")

# KEYS: lock, status, executed, last_run. ARGV: token, document, ttl seconds, lease ms, success, date.
FINISH_CYCLE = _typed(("string", "string", "string", "string"), """
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
""")


@dataclass(frozen=True)
class Overview:
    """What `status` and the planner need, read in one round trip."""

    statuses: dict[dt.date, SessionStatus | None]
    holder: LockHolder | None
    last_run: str | None


class StateStore:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_days: int, lease_seconds: float,
                 replication: Replication | None = None):
        self.client = client
        self.keys = keys
        self.replication = replication or Replication()
        self._ttl = ttl_days * 86400
        self._lease_ms = Lease(lease_seconds).ms
        self._writer = None  # the connection of the overlapped writes (_overlapped), while it works
        self._scripts = {script: (types, client.register_script(body))
                         for script, (types, body) in (("write", WRITE_STATUS), ("finish", FINISH_CYCLE))}

    def _call(self, script: str, keys: list[str], args: list, meanwhile: Callable[[], None] | None = None) -> int:
        """The fenced script, once as many replicas as `[redis] min_replicas` asks for have what it wrote;
        `meanwhile` runs once, while Redis works on it where it can (see _overlapped), else before."""
        types, run = self._scripts[script]
        result = None
        if meanwhile is not None and not self.replication.waits and isinstance(self.client, redis.Redis) and \
                self.client.connection is None:
            result = self._overlapped(run, keys, args, meanwhile)
        elif meanwhile is not None:
            meanwhile()
        if result is None:
            result = self.replication.write(self.client, keys[0], lambda c: run(keys=keys, args=args, client=c),
                                            "the state write", wrote=lambda reply: reply == 1)
        if isinstance(result, list):  # {-2, key index, type found}: nothing was written
            found = result[2].decode() if isinstance(result[2], bytes) else str(result[2])
            raise KeyTypeError(keys[int(result[1]) - 1], found, types[int(result[1]) - 1])
        return int(result)

    def _overlapped(self, run: Script, keys: list[str], args: list, meanwhile: Callable[[], None]) -> Any:
        """The script's EVALSHA sent, `meanwhile` run while Redis executes it, then its reply read; None when it
        has to be sent again the usual way (redis-py's path, with its retries and its loading of the script).

        A step's write takes a round trip of 0.2 to 0.5 ms, and its log lines about as long
        to write: done one after the other, they were a third of the time between two tasks.
        Sending the script again is safe: it writes the same document and lease, or nothing.
        """
        pool = self.client.connection_pool
        if self._writer is None:
            try:
                self._writer = pool.get_connection()  # kept for the next step's write: taking one costs 0.05 ms
            except BaseException:
                meanwhile()
                raise
        conn = self._writer
        try:
            try:
                conn.send_command("EVALSHA", run.sha, len(keys), *keys, *args)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                meanwhile()
                self._let_go(broken=True)
                return None
            meanwhile()
            try:
                return self.client.parse_response(conn, "EVALSHA")
            except redis.exceptions.NoScriptError:
                return None  # not cached on this server (a restart, a failover, SCRIPT FLUSH): loaded the usual way
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self._let_go(broken=True)
                return None
        except BaseException:
            self._let_go(broken=True)  # its reply may be left unread
            raise

    def _let_go(self, broken: bool = False) -> None:
        """Give the writes' connection back to the pool (disconnected when `broken`)."""
        conn, self._writer = self._writer, None
        if conn is not None:
            if broken:
                conn.disconnect()
            self.client.connection_pool.release(conn)

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
        from tradeul_maint.state.lock import LockHolder  # here: the cron tick reads statuses without the lock's logging

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
        return Overview(statuses, LockHolder.parse(lock, lock_ttl),
                        last_run.decode(errors="replace") if last_run else None)

    def job(self, prefix: str) -> StateStore:
        """A store of the same Redis for another job's keys (its own prefix, so its own lock and documents)."""
        if prefix == self.keys.prefix:
            return self
        return StateStore(self.client, Keys(prefix), self._ttl // 86400, self._lease_ms / 1000, self.replication)

    def statuses_of(self, wanted: list[tuple[str, list[dt.date]]]) -> list[dict[dt.date, SessionStatus | None]]:
        """Several jobs' sessions (key prefix, sessions), read in one round trip whatever the number of jobs: one
        MGET of them all; on a cluster, a pipeline of one MGET per job (each job's keys share a slot, two jobs'
        need not)."""
        from tradeul_maint.redisio.hello import is_cluster

        keys = [[Keys(prefix).status(s) for s in sessions] for prefix, sessions in wanted]
        if not any(keys):
            replies = [[] for _ in keys]
        elif is_cluster(self.client):
            pipe = self.client.pipeline(transaction=False)
            for job_keys in filter(None, keys):
                pipe.execute_command("MGET", *job_keys)
            answered = iter(pipe.execute())
            replies = [next(answered) if job_keys else [] for job_keys in keys]
        else:
            flat = iter(self.client.mget([key for job_keys in keys for key in job_keys]))
            replies = [[next(flat) for _ in job_keys] for job_keys in keys]
        return [{s: SessionStatus.from_json(s, r) for s, r in zip(sessions, raw)}
                for (_, sessions), raw in zip(wanted, replies)]

    def statuses(self, sessions: list[dt.date]) -> dict[dt.date, SessionStatus | None]:
        if not sessions:
            return {}
        raw = self.client.mget([self.keys.status(s) for s in sessions])
        return {s: SessionStatus.from_json(s, r) for s, r in zip(sessions, raw)}

    def check_key_types(self, sessions: list[dt.date]) -> None:
        """Raise KeyTypeError for the first of the tool's keys (for these sessions) that holds another type."""
        expected = self.keys.expected_types(sessions)
        pipe = self.client.pipeline(transaction=False)
        for key in expected:
            pipe.type(key)
        _raise_wrong_type(expected, pipe.execute())

    def write(self, token: str, status: SessionStatus, meanwhile: Callable[[], None] | None = None) -> None:
        """The whole document: what every scheduling step of a cycle records (`meanwhile`: see _call)."""
        if not self._call("write", [self.keys.lock, self.keys.status(status.session)],
                          [token, status.to_json(), self._ttl, self._lease_ms], meanwhile):
            raise LockLostError(_LOST)

    def finish(self, token: str, status: SessionStatus) -> None:
        self._let_go()
        s = status.session
        ok = self._call("finish", [self.keys.lock, self.keys.status(s), self.keys.executed(s), self.keys.last_run],
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
