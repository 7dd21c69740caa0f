"""Built-in tasks: ordinary task callables registered by name, with their parameters checked at load.

Each entry names the callable and the parameters it accepts; `validate_builtin` runs when
the configuration is loaded, so a typo in `params` is a configuration error (exit 78)
rather than a failure at 17:00.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import redis

from tradeul_maint.errors import ConfigError

SCAN_COUNT = 1000
UNLINK_BATCH = 1000


@dataclass(frozen=True)
class Builtin:
    func: Callable
    required: dict[str, type | tuple]
    optional: dict[str, type | tuple]


def target_redis(ctx) -> redis.Redis:
    """The maintenance Redis, or the one a task names with `params.url`."""
    url = ctx.params.get("url")
    if not url:
        return ctx.redis
    from tradeul_maint.connection import client_for_url

    return client_for_url(url)


def delete_keys(ctx) -> dict[str, Any]:
    """Delete every key matching the glob `patterns`: SCAN and UNLINK in pipelined batches, never KEYS."""
    client = target_redis(ctx)
    dry_run = bool(ctx.params.get("dry_run", False))
    total = 0
    for pattern in ctx.params["patterns"]:
        count = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
            batch.append(key)
            if len(batch) >= UNLINK_BATCH:
                count += _unlink(client, batch, dry_run)
                batch = []
        count += _unlink(client, batch, dry_run)
        ctx.logger.info("keys_deleted", pattern=pattern, keys=count, dry_run=dry_run)
        total += count
    ctx.report(keys_matched=total) if dry_run else ctx.report(keys_deleted=total)
    return {"success": True}


def _unlink(client: redis.Redis, keys: list[bytes], dry_run: bool) -> int:
    if not keys:
        return 0
    if dry_run:
        return len(keys)
    return int(client.unlink(*keys))


REGISTRY: dict[str, Builtin] = {
    "redis.delete_keys": Builtin(delete_keys, {"patterns": list}, {"dry_run": bool, "url": str}),
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
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
            raise ConfigError(f"[{section}] params.{key} = {value!r}: wrong type for {name}")
    missing = [k for k in entry.required if k not in params]
    if missing:
        raise ConfigError(f"[{section}] {name} needs params.{missing[0]}")
    patterns = params.get("patterns")
    if name == "redis.delete_keys" and not (patterns and all(isinstance(p, str) and p for p in patterns)):
        raise ConfigError(f"[{section}] params.patterns must be a non-empty list of glob patterns")


def builtin_callable(name: str) -> Callable:
    return REGISTRY[name].func
