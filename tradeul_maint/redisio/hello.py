"""The first exchange with a Redis server: does it answer, is it a cluster, and if it fails, whose is it to fix.

A connection's first command is INFO cluster rather than PING: one round trip that both
proves the server answers and says whether it is a Redis Cluster node (a user whose ACL
forbids INFO gets PING). When it fails, the failure is sorted into what the operator must
fix (ConfigError, exit 78: credentials, TLS that does not fit, a database that does not
exist, an endpoint that is not a Redis) and what the next cron tick may not meet again
(RedisUnavailableError, exit 75). Telling an HTTP server from a Redis that closed the
connection takes one more question, asked only on that failure: an inline PING on a
plain socket, which every Redis answers with a reply and nothing else does.
"""

from __future__ import annotations

import re
import socket
import ssl

import redis

from tradeul_maint.base.errors import ConfigError, RedisUnavailableError
from tradeul_maint.base.redact import scrub

_RESP_FIRST_BYTES = b"+-:$*_,#!=(|~>%"  # how every Redis reply begins, RESP2 and RESP3
ENCODE_HINT = ("percent-encode the special characters of the user, password and option values "
               "(/ ? # @ : as %2F %3F %23 %40 %3A)")


def is_cluster(client) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def hello(client, where: str) -> bool:
    """Whether the server is a Redis Cluster node; every error an operator must fix is a ConfigError here."""
    from redis.sentinel import SentinelConnectionPool

    if isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool):  # a cluster client has none
        ask_sentinels(client.connection_pool, where)
    try:
        if is_cluster(client):
            return bool(client.ping())
        try:
            return bool(client.info("cluster").get("cluster_enabled"))
        except redis.ResponseError as exc:
            if not isinstance(exc, redis.exceptions.NoPermissionError) and "unknown command" not in str(exc):
                raise
            client.ping()  # INFO forbidden to this user, or renamed away, as some managed services do
            return False
    except redis.AuthenticationError:
        raise ConfigError(f"Redis at {where} rejected the credentials: fix the user/password in the URL "
                          "(or the password file)") from None
    except TypeError as exc:  # an option in the URL's query the client does not know, found when it connects
        raise ConfigError(f"Redis URL {where!r} is invalid: {option_problem(exc)}") from None
    except redis.InvalidResponse as exc:
        raise ConfigError(f"{where} is not a Redis server (its reply does not parse: {reason(exc)[:80]}): "
                          "check the host and port") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise _failure(client, where, exc) from None
    except redis.ResponseError as exc:
        said = reason(exc)
        if "DB index is out of range" in said or "invalid DB index" in said:
            db = client.connection_pool.connection_kwargs.get("db")
            raise ConfigError(f"Redis at {where} has no database {db} (SELECT: {said}): fix the /DB in the "
                              "URL") from None
        if "SELECT is not allowed in cluster mode" in said:
            raise ConfigError(f"Redis URL {where!r} names a database other than 0, and this Redis is a cluster, "
                              "which has database 0 only: drop the /DB") from None
        if isinstance(exc, redis.exceptions.NoPermissionError) or said.startswith(("NOPERM", "DENIED")):
            raise ConfigError(f"Redis at {where} refused this user: {said}") from None
        raise RedisUnavailableError(f"Redis at {where} refused the connection: {said}") from None


def ask_sentinels(pool, where: str) -> None:
    """Ask each Sentinel of a redis+sentinel:// URL whether it knows the service, until one does.

    redis-py asks them too, but folds every failure into one message that dumps its
    clients' internals, and a plain Redis at a Sentinel's address into "no master found":
    asked here, a wrong password, a server that is not a Sentinel and a service name no
    Sentinel monitors are each the operator's to fix (ConfigError), and Sentinels that do
    not answer are temporary.
    """
    manager, service = pool.sentinel_manager, pool.service_name
    silent: list[BaseException] = []
    for sentinel in manager.sentinels:
        kwargs = sentinel.connection_pool.connection_kwargs
        address = f"{kwargs.get('host')}:{kwargs.get('port')}"
        try:
            masters = sentinel.sentinel_masters()
        except redis.AuthenticationError:
            raise ConfigError(f"the Sentinel at {address} ({where}) rejected the credentials: fix the user/password "
                              "in the URL (or the password file); the Sentinels and the master take the same") from None
        except redis.ResponseError as exc:
            said = reason(exc)
            if "unknown command" in said.lower():
                raise ConfigError(f"{address} in {where} is not a Sentinel (it answers as a plain Redis): use "
                                  f"redis://{address}/DB for it, or the Sentinels' addresses (port 26379)") from None
            if said.startswith(("NOAUTH", "NOPERM", "WRONGPASS")):
                raise ConfigError(f"the Sentinel at {address} ({where}) refused this user: {said[:120]}") from None
            raise RedisUnavailableError(f"the Sentinel at {address} ({where}) refused: {said[:120]}") from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            silent.append(exc)
            continue
        if service in masters:
            return
        known = ", ".join(sorted(map(str, masters))[:10]) or "none"
        raise ConfigError(f"the Sentinel at {address} ({where}) monitors no service {service!r} (it monitors: "
                          f"{known}): fix the service name in the URL")
    raise RedisUnavailableError(f"no Sentinel of {where} answers: {reason(silent[0])[:200]}")


def _failure(client, where: str, exc: BaseException) -> Exception:
    """The error for a connection that failed: TLS and non-Redis endpoints are the operator's to fix."""
    from redis.sentinel import MasterNotFoundError

    if isinstance(exc, MasterNotFoundError):  # its message lists every Sentinel client's repr: the first words say it
        return RedisUnavailableError(f"Redis at {where} is unreachable: {reason(exc).split(' : ')[0]}")
    if is_cluster(client):  # its nodes answered when it was made: this is the cluster failing since
        return RedisUnavailableError(f"Redis Cluster at {where} is unreachable: {reason(exc)}")
    chain = causes(exc)
    tls = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return ConfigError(f"Redis at {where}: TLS certificate not trusted ({tls.verify_message or reason(tls)}): "
                           "give the CA that signed the server's certificate as ssl_ca_certs=PATH in the URL")
    pool = client.connection_pool
    uses_tls = pool.connection_class is redis.SSLConnection
    if uses_tls and isinstance(tls, ssl.SSLError) and "PEM" in str(tls):
        return ConfigError(f"Redis at {where}: a TLS file named in the URL does not hold what its option expects "
                           f"({reason(tls)}): check ssl_ca_certs, ssl_certfile and ssl_keyfile")
    refused = any(isinstance(e, (ConnectionRefusedError, socket.gaierror, FileNotFoundError)) for e in chain)
    # A plain server that accepted and then said nothing in time would say nothing to the probe
    # either: asking costs another timeout that a cron job should not wait (exit 75 within seconds).
    # Behind rediss:// silence is what a plain Redis does to a TLS handshake: ask it then.
    silent = not uses_tls and any(isinstance(e, (redis.TimeoutError, TimeoutError)) for e in chain)
    answer = None if refused or silent else _plain_answer(pool)
    if uses_tls and answer is not None and answer[:1] in _RESP_FIRST_BYTES:
        return ConfigError(f"Redis at {where} answers without TLS: use redis://, or the port where the server "
                           "speaks TLS")
    if tls is not None:
        return ConfigError(f"Redis at {where}: TLS handshake failed ({getattr(tls, 'reason', None) or reason(tls)}):"
                           " check that the server speaks TLS and ssl_certfile/ssl_keyfile hold a client "
                           "certificate it accepts")
    if not uses_tls and answer is not None and answer[:1] not in _RESP_FIRST_BYTES:
        first = answer.split(b"\n", 1)[0].decode("ascii", errors="replace").strip()
        shown = "".join(c if c.isprintable() else "?" for c in first)[:60] or "nothing, and closed the connection"
        return ConfigError(f"{where} is not a Redis server (to PING it answered {shown!r}): check the host and "
                           "port, and rediss:// for a server that expects TLS")
    return RedisUnavailableError(f"Redis at {where} is unreachable: {reason(exc)}")


def _plain_answer(pool) -> bytes | None:
    """What the server says to an inline PING on a plain socket; None when it cannot be asked or says nothing in time.

    Asked only after a connection that opened failed on its first command: a Redis always
    answers PING with a reply (+PONG, -NOAUTH, -LOADING...); an HTTP server with a status
    line or a page, or nothing before it closes (b""); a TLS server closes too.
    """
    kwargs = pool.connection_kwargs
    if pool.connection_class is redis.UnixDomainSocketConnection:
        family, address = socket.AF_UNIX, kwargs.get("path")
    elif pool.connection_class in (redis.Connection, redis.SSLConnection):
        host = kwargs.get("host", "localhost")
        family, address = (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, kwargs.get("port", 6379))
    else:  # Sentinel: its failures say enough
        return None
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(kwargs.get("socket_connect_timeout") or 2.0)
            probe.connect(address)
            probe.sendall(b"PING\r\n")
            return probe.recv(256)
    except OSError:
        return None


def causes(exc: BaseException) -> list[BaseException]:
    """The exception and those it was raised from or during, outermost first."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def reason(exc: BaseException) -> str:
    """The exception's message as one line an operator may read: scrubbed, no trailing period."""
    return scrub(str(exc).strip().rstrip(".")) or type(exc).__name__


def option_problem(exc: Exception) -> str:
    """What is wrong with the URL's options, in words that name the option and never repeat a value."""
    text = str(exc)
    if match := re.search(r"unexpected keyword argument '(\w+)'", text):
        return f"unknown option {match[1]!r}"
    if match := re.search(r"Invalid value for '(\w+)'", text):
        return f"invalid value for option {match[1]!r}"
    return "it does not parse (" + ENCODE_HINT + ")"
