"""Connecting to Redis: URLs of every supported form, the embedded server, Cluster, and the password file.

Timeouts are short and retries few, so an unreachable Redis turns into exit 75 within a
few seconds rather than a hung cron job. Everything that is the operator's to fix rather
than the network's (a URL that does not parse as written, a server that is not Redis, a
database that does not exist, credentials or TLS files that do not fit, a cluster without
a hash-tagged prefix) is a ConfigError, exit 78. No password ever leaves this module: URLs
are shown only through `redact`, which never shows any part of a URL's user information
but a plain user name, and every password read here is remembered (base/redact.py), so that no
output of this process shows it anywhere else either.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tradeul_maint.base import envvars
from tradeul_maint.base.errors import ConfigError, RedisUnavailableError
from tradeul_maint.base.files import read_regular
from tradeul_maint.base.redact import remember, remember_url, scrub
from tradeul_maint.redisio.hello import ENCODE_HINT, causes, hello, is_cluster, option_problem, reason

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 2.5  # every command the tool sends is short; a hung server must not hang cron
SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
PASSWORD_FILE_LIMIT = 4096  # bytes: a password, not /dev/zero
TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")  # URL options naming files
_DB_PATH = re.compile(r"^(/\d*)?/?$")  # "", "/", "/3"


def redact(url: str) -> str:
    """The URL as it may be shown: no password, and no user information at all unless it is plain."""
    return scrub(url)


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


def check_url(url: str) -> str:
    """The URL's scheme, once the URL is known to mean what it says; ConfigError otherwise.

    A URL parser reads an unencoded "/", "?", "#" or "@" in a password as the end of the
    host part: part of the password becomes the host, path or fragment, and the rest may be
    sent to the wrong server or echoed in an error. So any "@" after the host part is
    refused with how to encode it, before anything parses the URL. Whatever a parser then
    refuses (a bracket left open, a port that is not a number) is a ConfigError too.
    """
    remember_url(url)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ConfigError(f"Redis URL {redact(url)!r}: expected redis://, rediss://, unix://, redis+sentinel:// "
                          "or redis+cluster://")
    host_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "@" in rest[host_end:] or rest[:host_end].count("@") > 1:
        raise ConfigError(f"Redis URL {redact(url)!r} does not parse as written: {ENCODE_HINT}")
    # Several hosts (Sentinel, Cluster) have no one port: _hosts reads them.
    parsed = ("username", "password", "hostname") + (("port",) if scheme in ("redis", "rediss") else ())
    try:
        parts = urlsplit(url)
        for part in parsed:
            getattr(parts, part)  # raises ValueError when that part does not parse
    except ValueError as exc:
        raise ConfigError(f"Redis URL {redact(url)!r} does not parse: {_parse_problem(exc)}") from None
    if scheme in ("redis", "rediss") and not _DB_PATH.match(parts.path):
        raise ConfigError(f"Redis URL {redact(url)!r}: the path must be a database number, as in /0")
    return scheme


def _parse_problem(exc: ValueError) -> str:
    """What to fix, in words that never repeat a part of the URL (urllib quotes the port it could not read)."""
    text = str(exc)
    if "IPv6" in text:
        return "an IPv6 address goes in brackets, opened and closed, as in redis://[::1]:6379/0"
    if "port" in text.lower():
        return "the port must be a number from 0 to 65535"
    return ENCODE_HINT


def read_password(path: Path) -> str:
    """The password in `path`, a regular file, without its trailing newline; remembered, so no output shows it."""
    try:
        text = read_regular(path, PASSWORD_FILE_LIMIT).decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the Redis password file {path} ({envvars.REDIS_PASSWORD_FILE} or [redis] "
                          f"password_file): {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the Redis password file {path} is not UTF-8 text") from None
    password = text[:-1] if text.endswith("\n") else text
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise ConfigError(f"the Redis password file {path} is empty")
    remember(password)
    return password


def client_for_url(url: str, password: str | None = None) -> redis.Redis:
    """A client for the URL (not connected yet); `password` when the URL has none (from the password file)."""
    scheme = check_url(url)
    if password is not None and urlsplit(url).password:
        raise ConfigError(f"Redis URL {redact(url)!r} has a password and a password file is set too: keep one")
    extra = {"password": password} if password is not None else {}
    if scheme == "redis+sentinel":
        return _sentinel_client(url, password)
    if scheme == "redis+cluster":
        return _cluster_client(url, password)
    try:
        client = redis.Redis.from_url(url, **_options(), **extra)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"Redis URL {redact(url)!r} is invalid: {option_problem(exc)}") from None
    for option in TLS_FILES:
        named = client.connection_pool.connection_kwargs.get(option)
        if named and not os.access(named, os.R_OK):
            client.close()
            raise ConfigError(f"Redis URL {redact(url)!r}: {option}={named} is not a readable file")
    return client


def _hosts(url: str, default_port: int, shape: str) -> tuple[str, str, list[tuple[str, int]], list[str]]:
    """(user, password, [(host, port)], path segments) of a URL that lists several hosts."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = []
    for host in hosts.split(",") if hosts else []:
        name, _, port = host.rpartition(":") if ":" in host else (host, "", str(default_port))
        if not name or not port.isdigit():
            raise ConfigError(f"Redis URL {redact(url)!r}: bad address {host!r}: expected {shape}")
        nodes.append((name, int(port)))
    if not nodes:
        raise ConfigError(f"Redis URL {redact(url)!r}: expected {shape}")
    return unquote(username), unquote(password), nodes, [p for p in parts.path.split("/") if p]


def _sentinel_client(url: str, file_password: str | None) -> redis.Redis:
    """redis+sentinel://[user:pass@]host:26379[,host2:26379...]/SERVICE_NAME[/DB]"""
    from redis.sentinel import Sentinel

    shape = "redis+sentinel://host:26379[,host2:26379]/SERVICE[/DB]"
    username, password, nodes, path = _hosts(url, 26379, shape)
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError(f"Redis URL {redact(url)!r}: expected {shape}")
    auth = {"username": username or None, "password": password or file_password}
    # The Sentinels get the same short retry as the master (redis-py's default retries a rejected password
    # three times, with seconds of backoff).
    sentinel = Sentinel(nodes, sentinel_kwargs={**auth, **_options(), "socket_timeout": CONNECT_TIMEOUT},
                        **auth, **_options())
    return sentinel.master_for(path[0], db=int(path[1]) if len(path) == 2 else 0)


def _cluster_client(url: str, file_password: str | None):
    """redis+cluster://[user:pass@]host:port[,host2:port...]: the seed nodes of a Redis Cluster."""
    from redis.cluster import ClusterNode

    shape = "redis+cluster://host:6379[,host2:6379...]"
    username, password, nodes, path = _hosts(url, 6379, shape)
    if path or urlsplit(url).query:
        raise ConfigError(f"Redis URL {redact(url)!r}: expected {shape} (a cluster has database 0 only)")
    return _cluster(redact(url), startup_nodes=[ClusterNode(host, port) for host, port in nodes],
                    username=username or None, password=password or file_password)


def _cluster(where: str, **kwargs):
    from redis.cluster import RedisCluster

    try:
        return RedisCluster(**kwargs, **_options())
    except redis.exceptions.RedisClusterException as exc:
        # It wraps what each node said in its message: credentials are the operator's to fix.
        if any(isinstance(e, redis.AuthenticationError) for e in causes(exc)) or \
                re.search(r"username-password|WRONGPASS|NOAUTH|AUTH failed", str(exc)):
            raise ConfigError(f"Redis Cluster at {where} rejected the credentials: fix the user/password in the URL "
                              "(or the password file)") from None
        raise RedisUnavailableError(f"Redis Cluster at {where} is unreachable: {reason(exc)}") from None


# --- connecting ---------------------------------------------------------------------


@contextmanager
def open_redis(url: str | None, state_dir: Path, *, password_file: Path | None = None,
               key_prefix: str | None = None) -> Iterator[tuple[redis.Redis, str]]:
    """A connected client and a printable description of where it points.

    With no URL, joins (or starts) the embedded server for `state_dir` and leaves it on exit.
    A `redis://` URL that leads to a Redis Cluster node gives a cluster client; then
    `key_prefix` must carry a hash tag (see `check_cluster_prefix`).
    """
    embedded = None
    if url is None:
        if password_file is not None:
            raise ConfigError(f"a Redis password file is set ({envvars.REDIS_PASSWORD_FILE} or [redis] password_file) but "
                              "no Redis URL: set [redis] url (or --redis-url), or unset the password file")
        from tradeul_maint.redisio.embedded import EmbeddedRedis

        embedded = EmbeddedRedis(state_dir)
        client = socket_client(embedded.start())
        where = f"embedded Redis in {embedded.dir}"
    else:
        client = connect(url, read_password(password_file) if password_file else None)
        where = redact(url)
    try:
        if is_cluster(client) and key_prefix is not None:
            check_cluster_prefix(key_prefix)
        yield client, where
    finally:
        client.close()
        if embedded is not None:
            embedded.stop()


def connect(url: str, password: str | None = None, cluster: bool | None = None):
    """A client for the URL that has answered: a cluster client when the server is a cluster node.

    The first command is INFO cluster rather than PING: one round trip that both proves the
    server answers and says whether it is a cluster (a user whose ACL forbids INFO gets PING).
    When the caller knows already (`cluster`: the runner found out for its task processes),
    there is no round trip: the client connects on its first command, if the task sends one.
    """
    client = client_for_url(url, password)
    if cluster is not None and (not cluster or is_cluster(client)):  # known, and made as it should be
        return client
    if cluster:  # a node's redis:// URL, of a server known to be a cluster node
        client.close()
        return _cluster(redact(url), url=url, **({"password": password} if password is not None else {}))
    where = redact(url)
    try:
        if hello(client, where) and not is_cluster(client):
            db = client.connection_pool.connection_kwargs.get("db") or 0
            client.close()
            if db:
                raise ConfigError(f"Redis URL {where!r} names database {db}, and this Redis is a cluster, which "
                                  "has database 0 only: drop the /DB")
            client = _cluster(where, url=url, **({"password": password} if password is not None else {}))
    except BaseException:
        client.close()
        raise
    return client


def check_cluster_prefix(prefix: str) -> None:
    """On a cluster, every key of the tool must hash to one slot: the fenced scripts touch several at once."""
    if hash_tag(prefix) is None:
        raise ConfigError(f"[redis] key_prefix = {prefix!r} has no hash tag, and this Redis is a cluster: the lock "
                          "and a session's keys must share one slot for the fenced scripts; use key_prefix = "
                          f"\"{{{prefix.strip('{}') or 'maintenance'}}}\"")


def hash_tag(prefix: str) -> str | None:
    """The hash tag every key `<prefix>:...` hashes by, as Redis Cluster finds it; None when there is none."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1) if start >= 0 else -1
    return prefix[start + 1:end] if start >= 0 and end > start + 1 else None
