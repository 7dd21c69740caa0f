"""Writes that survive a failover: WAIT (and WAITAOF) after the lock and every fenced state write.

Redis replicates asynchronously. A write the primary acknowledged is lost when the primary
fails before a replica has it and that replica is promoted (by Sentinel, a Cluster failover
or an operator): a task recorded completed would run again, a lock could vanish under its
holder. With `[redis] min_replicas = N` (N > 0), each write the tool's guarantees rest on
(taking the lock, renewing its lease, each fenced state script) is followed by `WAIT N
timeout`, and with `wait_aof = true` by `WAITAOF 1 N timeout` where the server has it
(7.2+; elsewhere WAIT alone, said once in the log): the write is then on N replicas (and in
the append-only files of the primary and of N replicas).

WAIT counts the replicas that have everything *its connection* wrote, and a Lua script
cannot call it, so a write and its WAIT go out together in one pipeline, on one connection;
on Redis Cluster, to the primary that owns the tool's hash slot (redis-py's cluster client
sends WAIT to a default node of its own, whose replicas say nothing of this write).

Fewer acknowledgements in time raise ReplicasInDoubtError: the write is on the primary and
may or may not survive a failover. The runner then starts no further task and ends (75);
the next run resumes from what the primary holds then, whichever server that is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import redis

from tradeul_maint.base.errors import ConfigError, ReplicasInDoubtError
from tradeul_maint.redisio.hello import is_cluster


@dataclass
class Replication:
    """How many replicas must acknowledge each of the tool's writes, and how long to wait for them."""

    min_replicas: int = 0
    timeout_seconds: float = 1.0
    wait_aof: bool = False
    aof_supported: bool | None = field(default=None, compare=False)  # the server has WAITAOF, once a reply said

    @property
    def waits(self) -> bool:
        return self.min_replicas > 0 or self.wait_aof

    def write(self, client, key: str, command: Callable[[Any], Any], what: str,
              wrote: Callable[[Any], bool] = bool) -> Any:
        """`command(c)` sends one write touching `key` through `c`; returns its reply once the replicas have it.

        No WAIT without `min_replicas` or `wait_aof`: the command goes through `client` as
        it always did. A reply that says nothing was written (`wrote` false: a lock already
        taken, a fenced script refused) is returned whatever the replicas said.
        """
        if not self.waits:
            return command(client)
        primary = primary_for(client, key)
        pipe = primary.pipeline(transaction=False)
        command(pipe)
        timeout_ms = max(1, round(self.timeout_seconds * 1000))
        if self.min_replicas:
            pipe.execute_command("WAIT", self.min_replicas, timeout_ms)
        aof = self.wait_aof and self.aof_supported is not False
        if aof:
            pipe.execute_command("WAITAOF", 1, self.min_replicas, timeout_ms)
        replies = pipe.execute(raise_on_error=False)
        if isinstance(replies[0], Exception):
            raise replies[0]
        for reply in replies[1:]:
            if isinstance(reply, redis.exceptions.NoPermissionError):
                raise ConfigError(f"the Redis user may not run WAIT or WAITAOF ({reply}): grant it +wait and +waitaof, "
                                  "or set [redis] min_replicas = 0 and wait_aof = false")
        if self.min_replicas and isinstance(replies[1], Exception):
            raise replies[1]
        if not wrote(replies[0]):
            return replies[0]
        acks = int(replies[1]) if self.min_replicas else None
        fsynced = self._fsynced(replies[-1]) if aof else None
        if (acks is not None and acks < self.min_replicas) or \
                (fsynced is not None and (fsynced[0] < 1 or fsynced[1] < self.min_replicas)):
            from loguru import logger  # not at the top: the cron tick imports this module and never writes

            error = ReplicasInDoubtError(f"{self._shortfall(acks, fsynced)} {what} within {self.timeout_seconds:g} s "
                                         f"({seen_replicas(primary)}): it may not survive a failover, so no further "
                                         "task was started; the next run resumes from what the primary holds then")
            logger.bind(write=what, acknowledged=acks, fsynced=fsynced, min_replicas=self.min_replicas,
                        console=False).error("write_in_doubt", detail=str(error))
            raise error
        return replies[0]

    def _fsynced(self, reply: Any) -> tuple[int, int] | None:
        """WAITAOF's (local, replicas) count; None when the server has no WAITAOF (it is older than 7.2)."""
        if isinstance(reply, redis.ResponseError) and "unknown command" in str(reply).lower():
            if self.aof_supported is None:
                from loguru import logger

                logger.bind(console=False).warning("waitaof_unsupported",
                                                   detail="this Redis has no WAITAOF (7.2+): WAIT alone confirms "
                                                          "each write")
            self.aof_supported = False
            return None
        if isinstance(reply, redis.ResponseError):
            raise ConfigError(f"[redis] wait_aof = true, and Redis refused WAITAOF ({reply}): turn on appendonly "
                              "on the primary and its replicas, or set wait_aof = false")
        if isinstance(reply, Exception):
            raise reply
        self.aof_supported = True
        return int(reply[0]), int(reply[1])

    def _shortfall(self, acks: int | None, fsynced: tuple[int, int] | None) -> str:
        """Who fell short, as the start of the sentence that ends with what was written."""
        needed = f"the {self.min_replicas} replica{'s' if self.min_replicas != 1 else ''} [redis] min_replicas asks for"
        if acks is not None and acks < self.min_replicas:
            return f"only {acks} of {needed} acknowledged"
        local, replicas = fsynced or (0, 0)
        if not local:
            return "the primary did not fsync to its append-only file ([redis] wait_aof = true)"
        return f"only {replicas} of {needed} fsynced to their append-only files ([redis] wait_aof = true)"


def primary_for(client, key: str):
    """The client of the server that owns `key`: `client` itself, or on a cluster its slot's primary."""
    if not is_cluster(client):
        return client
    return client.get_redis_connection(client.get_node_from_key(key))


def seen_replicas(primary) -> str:
    """The replicas the primary sees, as INFO replication lists them: `the primary sees 1 replica: ...`."""
    try:
        info = primary.info("replication")
    except redis.RedisError as exc:
        return f"its replicas could not be listed: {str(exc).strip() or type(exc).__name__}"
    replicas = [value for name, value in info.items() if name.startswith("slave") and isinstance(value, dict)]
    if not replicas:
        return "the primary sees no replica"
    listed = ", ".join(f"{r.get('ip')}:{r.get('port')} {r.get('state')}, lag {r.get('lag')} s" for r in replicas)
    return f"the primary sees {len(replicas)} replica{'s' if len(replicas) != 1 else ''}: {listed}"
