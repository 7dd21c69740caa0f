"""The run lock: one runner at a time across every process and host sharing the Redis.

The lock has an owner. Its value is a unique token that also says who holds it (host,
pid, since); it is taken with `SET NX PX` (lease in the same command), renewed by a
background thread while tasks run, and renewed or released only by Lua that checks the
token first. A holder that dies stops renewing and its lease expires. A holder that was
paused past its lease finds the token changed and learns it has lost the lock: every
state write is fenced on the same token (see state/store.py). With `[redis] min_replicas`, taking
the lock and each renewal wait for the replicas (redisio/replicas.py): a lease they may not have
is a lease that may not outlive a failover, and the run stops as if it had lost the lock.

The lease's figures and scripts are state/lease.py's, shared with the supervisor's lease watch and
the state writes.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace

import redis
from loguru import logger

from tradeul_maint.base import safejson
from tradeul_maint.base.errors import ForeignLockError, KeyTypeError, LockBusyError, LockLostError, MaintError
from tradeul_maint.redisio.replicas import Replication
from tradeul_maint.state.lease import RELEASE, RENEW, Lease


@dataclass(frozen=True)
class LockHolder:
    """Who holds the lock, as its value says; `foreign` when this tool did not write it."""

    host: str
    pid: int
    since: str
    run_id: str
    foreign: str | None = None  # why the value cannot be this tool's (or its lease has no end)

    @classmethod
    def parse(cls, raw: bytes | str | None, ttl_ms: int | None = None) -> LockHolder | None:
        """The holder named by the lock's value; `ttl_ms` is its PTTL (-1: no expiry) when known."""
        if raw is None:
            return None
        try:
            doc = safejson.loads(raw)
            holder = cls(host=str(doc["host"]), pid=int(doc["pid"]), since=str(doc["since"]),
                         run_id=str(doc["run_id"]))
            if not doc.get("nonce"):
                raise KeyError("nonce")
        except (ValueError, KeyError, TypeError):
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            return cls(host="?", pid=0, since="?", run_id="",
                       foreign=f"a value this tool did not write ({text[:40]!r})")
        if ttl_ms == -1:
            return replace(holder, foreign="a value without an expiry (this tool always sets a lease)")
        return holder

    def describe(self) -> str:
        if self.foreign:
            return self.foreign
        return f"host {self.host}, pid {self.pid}, since {self.since}"


def foreign_lock_error(key: str, holder: LockHolder) -> ForeignLockError:
    return ForeignLockError(
        f"the run lock {key} holds {holder.foreign}, so no run can start: if no tradeul-maint run is going on, "
        f"delete it (redis-cli DEL {key}); if another application uses this key, give this tool its own "
        "[redis] key_prefix")


class RunLock:
    """Use as a context manager; `token` fences the state writes made while holding it."""

    def __init__(self, client: redis.Redis, key: str, lease_seconds: float, run_id: str, since: str,
                 replication: Replication | None = None):
        self._client = client
        self._replication = replication or Replication()
        self.doubt: MaintError | None = None  # a renewal the replicas did not confirm (or could not be asked to)
        self.key = key
        self.lease = Lease(lease_seconds)
        self.run_id = run_id
        self.token = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": since,
                                 "run_id": run_id, "nonce": uuid.uuid4().hex}, separators=(",", ":"))
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = threading.Event()
        self.lost_reason = ""
        self._kept = False

    def acquire(self) -> None:
        try:
            taken = self._replication.write(self._client, self.key, lambda c: c.set(
                self.key, self.token, nx=True, px=self.lease.ms), "taking the run lock")
        except MaintError:
            self.release()  # taken on the primary, not confirmed by its replicas: not a lock to run under
            raise
        if not taken:
            holder = read_holder(self._client, self.key)
            if holder is not None and holder.foreign:
                raise foreign_lock_error(self.key, holder)
            where = holder.describe() if holder else "a runner that just released it"
            raise LockBusyError(f"another runner holds the lock ({where}); try again when it has finished",
                                holder=holder.__dict__ if holder else None)
        self._thread = threading.Thread(target=self._keep_alive, name="lock-renewal", daemon=True)
        self._thread.start()

    def _keep_alive(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(self.lease.renew_every):
            try:
                if not self._replication.write(self._client, self.key, lambda c: self._renew(
                        keys=[self.key], args=[self.token, self.lease.ms], client=c),
                        "the renewal of the run lock's lease"):
                    self._lose("its lease expired and another runner took over")
                    return
                renewed = time.monotonic()
            except MaintError as exc:  # ReplicasInDoubtError, or a WAIT the server refuses
                self.doubt = exc
                self.lost.set()  # as good as lost: the runner stops its tasks and ends
                return
            except redis.RedisError as exc:
                if time.monotonic() - renewed > self.lease.seconds:
                    self._lose(f"Redis could not be reached for longer than the lease ({exc})")
                    return
                # Keep trying while the lease lasts.
                logger.bind(error=str(exc), console=False).warning("lock_renewal_failed")

    def _lose(self, why: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = why
        logger.bind(reason=why, run_id=self.run_id).error("lock_lost")
        self.lost.set()

    def check(self) -> None:
        if self.doubt is not None:
            raise self.doubt
        if self.lost.is_set():
            raise LockLostError(f"this runner lost the run lock ({self.lost_reason}); it stopped its tasks "
                                "without writing more state")

    def verify(self) -> None:
        """Ask Redis now whether the lock is still this runner's; LockLostError when it is not."""
        try:
            if self._renew(keys=[self.key], args=[self.token, self.lease.ms]):
                return
        except redis.RedisError:
            return  # cannot tell: the renewal thread decides
        self._lose("its lease expired and another runner took over")
        self.check()

    def keep(self) -> None:
        """Do not release the lock on exit (processes of its run may be alive): its lease runs out by itself."""
        self._kept = True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._kept:
            return
        try:
            self._release(keys=[self.key], args=[self.token])
        except redis.RedisError:
            pass  # the lease expires on its own

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(client: redis.Redis, key: str) -> LockHolder | None:
    """The lock's holder, its expiry considered; KeyTypeError when the key is not a string."""
    pipe = client.pipeline(transaction=False)
    pipe.type(key)
    pipe.get(key)
    pipe.pttl(key)
    kind, raw, ttl = pipe.execute(raise_on_error=False)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind not in ("none", "string"):
        raise KeyTypeError(key, kind, "string")
    return LockHolder.parse(raw, ttl)

