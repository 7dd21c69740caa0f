"""Built-in tasks: ordinary task callables registered by name, with their parameters checked at load.

Each entry names the callable, the parameters it accepts and a check of how they combine;
`validate_builtin` runs when the configuration is loaded, so a typo in `params` is a
configuration error (exit 78) rather than a failure at 17:00. A built-in acts on the
maintenance Redis, or on the Redis a task names with `params.url`, which it opens and
closes itself. An operator-actionable failure is returned as `{"success": False, "error":
...}`, like every other task; an unexpected Redis error is raised and recorded as is.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import redis

from tradeul_maint.connection import check_url, connect
from tradeul_maint.errors import ConfigError
from tradeul_maint.handshake import is_cluster
from tradeul_maint.keys import Keys
from tradeul_maint.redisglob import can_match_key_starting_with
from tradeul_maint.settings import check_type

# Buckets examined per SCAN call: about a millisecond of server time each (bench_delete_keys
# shows it), so other clients never wait long, and few enough steps that the client's wait
# between two of them (a wakeup, a round trip) stays a small part of the server's work.
SCAN_COUNT = 2000
BGSAVE_TIMEOUT = 600.0
POLL_FIRST, POLL_MAX = 0.02, 0.5  # seconds between INFO polls while a snapshot runs (doubling)
AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])?$")
AGE_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Builtin:
    func: Callable[[Any], dict[str, Any]]
    required: dict[str, type | tuple]
    optional: dict[str, type | tuple]
    check: Callable[[dict[str, Any], str], None] | None = None  # how the parameters combine


@contextmanager
def target_redis(ctx) -> Iterator[redis.Redis]:
    """The maintenance Redis, or the one a task names with `params.url` (opened here, closed after)."""
    url = ctx.params.get("url")
    if not url:
        yield ctx.redis
        return
    client = connect(url)
    try:
        yield client
    finally:
        client.close()


def primaries(client) -> list[redis.Redis]:
    """The client itself; on a Redis Cluster, a client for each primary, each holding its own part of the keys."""
    if not is_cluster(client):
        return [client]
    return [client.get_redis_connection(node) for node in client.get_primaries()]


def parse_age(value: Any, what: str) -> float:
    """Seconds from a number or a duration such as "90s", "30m", "2h", "7d"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := AGE.match(value.strip())):
        seconds = float(match[1]) * AGE_UNITS[match[2]]
    else:
        raise ConfigError(f"{what} = {value!r}: expected seconds or a duration like \"30m\", \"2h\" or \"7d\"")
    if seconds <= 0:
        raise ConfigError(f"{what} = {value!r}: must be positive")
    return seconds


# --- redis.delete_keys -------------------------------------------------------------------


def delete_keys(ctx) -> dict[str, Any]:
    """Delete every key matching the glob `patterns`; with `dry_run`, only count them.

    Never a key under the tool's own prefix, whatever the pattern and whichever Redis
    `params.url` names: those are skipped as SCAN returns them (and counted, with a
    warning), so no pattern can delete a status document or the lock.
    """
    dry_run = ctx.params.get("dry_run", False)
    # Every job's: the configured [redis] key_prefix, and each [jobs.NAME]'s.
    namespaces = ctx.namespaces or (Keys(ctx.key_prefix).namespace,)
    namespace = ", ".join(namespaces)
    total = 0
    with target_redis(ctx) as client:
        for pattern in ctx.params["patterns"]:
            guard = tuple(n for n in namespaces if can_match_key_starting_with(pattern, n)) or None
            count = spared = 0
            for node in primaries(client):  # SCAN walks one server's keys: on a cluster, every primary's
                deleted, kept = _delete_matching(node, pattern, dry_run, guard, by_slot=node is not client)
                count, spared = count + deleted, spared + kept
            if spared:
                ctx.logger.bind(pattern=pattern, keys=spared, prefix=namespace).warning("own_keys_spared")
            ctx.logger.bind(pattern=pattern, keys=count, dry_run=dry_run) \
                .info("keys_matched" if dry_run else "keys_deleted")
            total += count
    ctx.report(**{"keys_matched" if dry_run else "keys_deleted": total})
    return {"success": True}


def _delete_matching(client: redis.Redis, pattern: str, dry_run: bool, guard: tuple[str, ...] | None,
                     by_slot: bool = False) -> tuple[int, int]:
    """SCAN the keyspace once, UNLINKing what each step found while the next step runs; (deleted, spared).

    On one connection, the next SCAN is sent before the UNLINK of the keys the last one
    returned, and the server runs that UNLINK while this side reads the SCAN's reply: the
    deletes cost no round trip of their own, client and server work side by side, and at
    most two steps' keys (about 2 x SCAN_COUNT) are held at a time, whatever the key count.
    Never KEYS: it blocks the server for the whole keyspace. Keys that begin with `guard`
    (the tool's own) are left out of every UNLINK. On a cluster node (`by_slot`), one
    UNLINK per hash slot, since a command's keys must share one. A dry run counts what
    SCAN returns, which may include a key twice if the server rehashes meanwhile; the
    deleted count comes from UNLINK and is exact.
    """
    pool = client.connection_pool
    conn = _connection(pool)
    count = spared = 0
    unlinks = 0  # UNLINKs sent behind the last SCAN, whose replies follow its reply
    try:
        conn.send_command("SCAN", 0, "MATCH", pattern, "COUNT", SCAN_COUNT)
        while True:
            cursor, keys = conn.read_response()
            finished = int(cursor) == 0
            if not finished:  # queued behind the UNLINKs still running: the server never waits for this side
                conn.send_command("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
            for _ in range(unlinks):
                count += int(conn.read_response())
            if guard is not None and keys:
                kept = _not_under(keys, guard)
                spared += len(keys) - len(kept)
                keys = kept
            unlinks = 0
            if dry_run:
                count += len(keys)
            elif keys:
                batches = _by_slot(keys) if by_slot else [keys]
                for batch in batches:
                    conn.send_command("UNLINK", *batch)
                unlinks = len(batches)
            if finished:
                for _ in range(unlinks):
                    count += int(conn.read_response())
                return count, spared
    except BaseException:
        conn.disconnect()  # replies may be unread: the pool must not hand this connection out as it is
        raise
    finally:
        pool.release(conn)


def _by_slot(keys: list) -> list[list]:
    from redis.crc import key_slot

    slots: dict[int, list] = {}
    for key in keys:
        slots.setdefault(key_slot(key if isinstance(key, bytes) else key.encode()), []).append(key)
    return list(slots.values())


def _not_under(keys: list, namespaces: tuple[str, ...]) -> list:
    """The keys that begin with none of `namespaces` (bytes or str, as the connection returns them)."""
    starts = tuple(n.encode() for n in namespaces) if isinstance(keys[0], bytes) else namespaces
    return [key for key in keys if not key.startswith(starts)]


def _connection(pool: redis.ConnectionPool) -> redis.Connection:
    try:
        return pool.get_connection()
    except TypeError:  # redis-py before 5.3 wants a command name
        return pool.get_connection("SCAN")


# --- redis.trim_streams ------------------------------------------------------------------


def trim_streams(ctx) -> dict[str, Any]:
    """Trim the named streams and those matching `patterns` to `maxlen` entries or to the last `max_age`."""
    params = ctx.params
    approximate = params.get("approximate", True)
    named = list(dict.fromkeys(params.get("streams", [])))
    with target_redis(ctx) as client:
        if "max_age" in params:
            # The cutoff comes from the server's clock, the one that stamped the entry IDs.
            seconds, micros = primaries(client)[0].time()
            cutoff_ms = max(0, seconds * 1000 + micros // 1000 - int(parse_age(params["max_age"], "max_age") * 1000))
            limit: dict[str, Any] = {"minid": f"{cutoff_ms}-0"}
            kept = f"entries newer than {dt.datetime.fromtimestamp(cutoff_ms / 1000, dt.timezone.utc).isoformat()}"
        else:
            limit = {"maxlen": params["maxlen"]}
            kept = f"{'about ' if approximate else ''}{params['maxlen']} entries"
        types = client.pipeline(transaction=False)
        for name in named:
            types.type(name)
        present = []
        for name, kind in zip(named, types.execute()):
            kind = kind.decode() if isinstance(kind, bytes) else kind
            if kind == "none":
                ctx.logger.bind(stream=name).warning("stream_missing")
            elif kind != "stream":
                return {"success": False, "error": f"params.streams: {name} is a {kind}, not a stream"}
            else:
                present.append(name)
        # (log field, its value, the streams): the named ones first, then each pattern's.
        groups: list[tuple[str, Any, Any]] = [("streams", named, present)] if named else []
        groups += [("pattern", pattern, _streams_matching(client, pattern, set(named)))
                   for pattern in params.get("patterns", [])]
        streams = removed = 0
        for field, value, names in groups:
            group_streams = group_removed = 0
            for name in names:
                n = _trim(client, name, approximate, limit)
                ctx.logger.bind(stream=_text(name), entries_removed=n).debug("stream_trimmed")
                group_streams += 1
                group_removed += n
            ctx.logger.bind(**{field: value}, streams_trimmed=group_streams, entries_removed=group_removed,
                            kept=kept).info("streams_trimmed")
            streams += group_streams
            removed += group_removed
    ctx.report(streams_trimmed=streams, entries_removed=removed)
    return {"success": True}


def _streams_matching(client: redis.Redis, pattern: str, skip: set[str]) -> Iterator[bytes]:
    for node in primaries(client):
        for key in node.scan_iter(match=pattern, count=SCAN_COUNT, _type="stream"):
            if _text(key) not in skip:
                yield key


def _trim(client: redis.Redis, name: str | bytes, approximate: bool, limit: dict[str, Any]) -> int:
    """XTRIM until done: an approximate trim stops after 100 x stream-node-max-entries entries a call.

    Repeating the call (rather than LIMIT 0) keeps each call short on a stream of millions of
    entries; an exact trim removes everything in one call.
    """
    removed = 0
    while True:
        n = int(client.xtrim(name, approximate=approximate, **limit))
        removed += n
        if n == 0 or not approximate:
            return removed


# --- redis.bgsave ------------------------------------------------------------------------


def bgsave(ctx) -> dict[str, Any]:
    """BGSAVE and wait for it; success with a note, doing nothing, when the server does not persist.

    On a Redis Cluster, each primary in turn: the first that fails ends the task.
    """
    timeout = parse_age(ctx.params.get("timeout", BGSAVE_TIMEOUT), "timeout")
    with target_redis(ctx) as client:
        for node in primaries(client):
            outcome = _bgsave(ctx, node, timeout)
            if not outcome["success"]:
                break
    return outcome


def _bgsave(ctx, client: redis.Redis, timeout: float) -> dict[str, Any]:
    if not _persistence_enabled(client):
        note = "skipped: persistence is disabled on this Redis (save \"\" and appendonly no)"
        ctx.logger.bind(reason=note).info("snapshot_skipped")
        return {"success": True, "note": note}
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        try:
            client.bgsave(schedule=False)
            break  # the child has forked: our snapshot is in progress
        except redis.ResponseError as exc:
            if "in progress" not in str(exc).lower():
                raise
            # Another save or an AOF rewrite forked before the tasks' last writes, so its
            # snapshot may miss them: let it finish, then take ours.
            waited = True
            ctx.logger.bind(reason=str(exc)).info("snapshot_waiting_for_running_save")
            if not _wait_until_idle(client, deadline) or time.monotonic() >= deadline:
                return _timed_out(timeout, "the save already running")
            time.sleep(POLL_FIRST)
    ctx.logger.info("snapshot_started")
    if not _wait_until_idle(client, deadline):
        return _timed_out(timeout, "BGSAVE")
    info = client.info("persistence")
    if info.get("rdb_last_bgsave_status") != "ok":
        return {"success": False, "error": "BGSAVE failed (rdb_last_bgsave_status:err): the Redis server log says "
                                           "why (disk full, permissions of its dir, dbfilename)"}
    saved_at = dt.datetime.fromtimestamp(int(info["rdb_last_save_time"]), dt.timezone.utc).isoformat()
    ctx.logger.bind(saved_at=saved_at, seconds=info.get("rdb_last_bgsave_time_sec")).info("snapshot_completed")
    ctx.report(saved_at=saved_at, bgsave_seconds=info.get("rdb_last_bgsave_time_sec"),
               waited_for_running_save=waited)
    return {"success": True}


def _persistence_enabled(client: redis.Redis) -> bool:
    """False only when CONFIG GET shows no save points and no AOF; a server that hides CONFIG is asked anyway."""
    try:
        config = {_text(k): _text(v) for k, v in client.config_get("save").items()}
        config.update({_text(k): _text(v) for k, v in client.config_get("appendonly").items()})
    except redis.ResponseError:  # CONFIG renamed or forbidden, as on managed services
        return True
    return bool(config.get("save", "").strip()) or config.get("appendonly") == "yes"


def _wait_until_idle(client: redis.Redis, deadline: float) -> bool:
    """Poll INFO persistence until no RDB save and no AOF rewrite runs; False at the deadline."""
    pause = POLL_FIRST
    while True:
        info = client.info("persistence")
        if not info.get("rdb_bgsave_in_progress") and not info.get("aof_rewrite_in_progress"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, POLL_MAX)


def _timed_out(timeout: float, what: str) -> dict[str, Any]:
    return {"success": False, "error": f"{what} did not finish within {timeout:g}s (it goes on in the server): "
                                       "raise params.timeout or see why the server is slow to write"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- the registry and load-time validation ----------------------------------------------


def _names(params: dict[str, Any], key: str, section: str) -> None:
    value = params.get(key)
    if value is not None and not (value and all(isinstance(v, str) and v for v in value)):
        raise ConfigError(f"[{section}] params.{key} must be a non-empty list of names or glob patterns")


def _check_delete_keys(params: dict[str, Any], section: str) -> None:
    _names(params, "patterns", section)


def _check_trim_streams(params: dict[str, Any], section: str) -> None:
    _names(params, "streams", section)
    _names(params, "patterns", section)
    if "streams" not in params and "patterns" not in params:
        raise ConfigError(f"[{section}] redis.trim_streams needs params.streams or params.patterns")
    if ("maxlen" in params) == ("max_age" in params):
        raise ConfigError(f"[{section}] redis.trim_streams needs exactly one of params.maxlen (entries kept) "
                          "or params.max_age (e.g. \"2h\")")
    if "maxlen" in params and params["maxlen"] < 0:
        raise ConfigError(f"[{section}] params.maxlen = {params['maxlen']}: must be 0 or more")
    if "max_age" in params:
        parse_age(params["max_age"], f"[{section}] params.max_age")


def _check_bgsave(params: dict[str, Any], section: str) -> None:
    if "timeout" in params:
        parse_age(params["timeout"], f"[{section}] params.timeout")


REGISTRY: dict[str, Builtin] = {
    "redis.delete_keys": Builtin(delete_keys, {"patterns": list}, {"dry_run": bool, "url": str},
                                 _check_delete_keys),
    "redis.trim_streams": Builtin(trim_streams, {}, {"streams": list, "patterns": list, "maxlen": int,
                                                     "max_age": (int, float, str), "approximate": bool, "url": str},
                                  _check_trim_streams),
    "redis.bgsave": Builtin(bgsave, {}, {"timeout": (int, float, str), "url": str}, _check_bgsave),
}


def validate_builtin(name: str, params: dict[str, Any], section: str) -> None:
    entry = REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"[{section}] builtin = {name!r}: unknown built-in (known: {', '.join(sorted(REGISTRY))})")
    for key, value in params.items():
        kind = entry.required.get(key) or entry.optional.get(key)
        if kind is None:
            raise ConfigError(f"[{section}] params.{key}: unknown parameter for {name} "
                              f"(known: {', '.join(sorted({**entry.required, **entry.optional}))})")
        check_type(f"[{section}] params.{key}", value, kind, f" for {name}")
    missing = [k for k in entry.required if k not in params]
    if missing:
        raise ConfigError(f"[{section}] {name} needs params.{missing[0]}")
    if params.get("url") is not None:
        try:
            check_url(params["url"])
        except ConfigError as exc:
            raise ConfigError(f"[{section}] params.url: {exc}") from None
    if entry.check:
        entry.check(params, section)


def builtin_callable(name: str) -> Callable:
    return REGISTRY[name].func
