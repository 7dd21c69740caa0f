"""Connecting to Redis: URLs of every supported form, the embedded server, and redaction.

Timeouts are short and retries few, so an unreachable Redis turns into exit 75 within a
few seconds rather than a hung cron job. No password ever leaves this module: URLs are
shown only through `redact`.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tradeul_maint.errors import ConfigError, RedisUnavailableError

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 2.5  # every command the tool sends is short; a hung server must not hang cron
SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")
_USERINFO = re.compile(r"^([a-z+]+://)([^/@]*)@")


def redact(url: str) -> str:
    """The URL with any password replaced by ***."""
    match = _USERINFO.match(url)
    if not match:
        return url
    user, sep, _ = match[2].partition(":")
    userinfo = f"{user}:***" if sep else match[2]
    return f"{match[1]}{userinfo}@{url[match.end():]}"


def _options() -> dict:
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": COMMAND_TIMEOUT,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


def socket_client(path: str) -> redis.Redis:
    """A client on a unix socket: the embedded Redis."""
    return redis.Redis(unix_socket_path=path, **_options())


def client_for_url(url: str) -> redis.Redis:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigError(f"Redis URL {redact(url)!r}: expected redis://, rediss://, unix:// or redis+sentinel://")
    if scheme == "redis+sentinel":
        return _sentinel_client(url)
    try:
        return redis.Redis.from_url(url, **_options())
    except ValueError as exc:
        raise ConfigError(f"Redis URL {redact(url)!r} is invalid: {exc}") from None


def _sentinel_client(url: str) -> redis.Redis:
    """redis+sentinel://[user:pass@]host:26379[,host2:26379...]/SERVICE_NAME[/DB]"""
    from redis.sentinel import Sentinel

    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    path = [p for p in parts.path.split("/") if p]
    if not hosts or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError(f"Redis URL {redact(url)!r}: expected redis+sentinel://host:26379[,host2:26379]/SERVICE[/DB]")
    nodes = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "26379")
        if not port.isdigit():
            raise ConfigError(f"Redis URL {redact(url)!r}: bad sentinel address {host!r}")
        nodes.append((name, int(port)))
    auth = {"username": unquote(username) or None, "password": unquote(password) or None}
    opts = _options()
    sentinel = Sentinel(nodes, sentinel_kwargs={**auth, "socket_connect_timeout": CONNECT_TIMEOUT,
                                                "socket_timeout": CONNECT_TIMEOUT}, **auth, **opts)
    return sentinel.master_for(path[0], db=int(path[1]) if len(path) == 2 else 0)


@contextmanager
def open_redis(url: str | None, state_dir: Path) -> Iterator[tuple[redis.Redis, str]]:
    """A connected client and a printable description of where it points.

    With no URL, joins (or starts) the embedded server for `state_dir` and leaves it on exit.
    """
    embedded = None
    if url is None:
        from tradeul_maint.embedded import EmbeddedRedis

        embedded = EmbeddedRedis(state_dir)
        client = socket_client(embedded.start())
        where = f"embedded Redis in {embedded.dir}"
    else:
        client = client_for_url(url)
        where = redact(url)
    try:
        try:
            client.ping()
        except redis.AuthenticationError:
            raise ConfigError(f"Redis at {where} rejected the credentials: fix the user/password in the URL") from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise RedisUnavailableError(f"Redis at {where} is unreachable: {_reason(exc)}") from None
        except redis.ResponseError as exc:
            raise RedisUnavailableError(f"Redis at {where} refused the connection: {_reason(exc)}") from None
        yield client, where
    finally:
        client.close()
        if embedded is not None:
            embedded.stop()


def _reason(exc: BaseException) -> str:
    return str(exc).strip().rstrip(".") or type(exc).__name__
