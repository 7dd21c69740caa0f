"""A value read from the configuration file, checked for its type and said in TOML's words.

Shared by the settings and the built-ins' parameters (builtin_params.py), which both read values a person typed.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any
from urllib.parse import urlsplit

from tradeul_maint.base.errors import ConfigError
from tradeul_maint.base.redact import remember
from tradeul_maint.config.settings import LONGEST_SECONDS, WindowStart

_TOML_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "an array",
               dict: "a table"}


def check_type(what: str, value: Any, kind: type | tuple, suffix: str = "") -> None:
    """A value of the wrong type, said in TOML's words (the file's, not Python's: `true`, "an array")."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return  # booleans are ints in Python, never in a config file
    names = "a number" if set(kinds) == {int, float} else " or ".join(_TOML_KINDS.get(k, k.__name__) for k in kinds)
    shown = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    raise ConfigError(f"{what} = {shown}: expected {names}{suffix}")


WALL_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# "close", "close+60m", "open-5h45m": an offset (hours, minutes or both) from that session's open or close.
RELATIVE = re.compile(r"^(open|close)(?:([+-])(?=\d)(?:(\d+)h)?(?:(\d+)m)?)?$")


DURATION = re.compile(r"^(\d+)\s*(s|m|h)?$")
SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB)$", re.IGNORECASE)


def typed(table: dict, section: str, key: str, kind: type | tuple, default: Any) -> Any:
    if key not in table:
        return default
    check_type(f"[{section}] {key}", table[key], kind)
    return table[key]


def positive(section: str, key: str, value: float, minimum: float = 1, maximum: float | None = None) -> float:
    """A count, limit or duration within its bounds. A duration's maximum keeps every time computed from it
    (a deadline, a backoff, a key's TTL) within what datetime and Redis can hold."""
    if not math.isfinite(value):  # TOML has nan and inf: neither is a count, a limit or a duration
        raise ConfigError(f"[{section}] {key} = {value}: must be a finite number, at least {minimum}")
    if value < minimum:
        raise ConfigError(f"[{section}] {key} = {value}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"[{section}] {key} = {value}: must be at most {maximum:g}")
    return value


def parse_window_start(text: str, section: str = "schedule") -> WindowStart:
    text = text.strip().replace(" ", "")
    if match := WALL_TIME.match(text):
        return WindowStart(wall_time=dt.time(int(match[1]), int(match[2])), text=text)
    if match := RELATIVE.match(text):
        anchor, sign, hours, minutes = match.groups()
        total = int(hours or 0) * 60 + int(minutes or 0)  # compared before it becomes a timedelta: any digits load
        if total > 24 * 60:
            raise ConfigError(f"[{section}] window_start = {text!r}: an offset from the {anchor} must be within "
                              "24 hours")
        offset = dt.timedelta(minutes=-total if sign == "-" else total)
        return WindowStart(**{f"{anchor}_offset": offset}, text=text)
    raise ConfigError(f"[{section}] window_start = {text!r}: expected a local time like \"17:00\", or an offset "
                      "from the session's close or open like \"close+60m\", \"close-15m\", \"open-5h45m\", "
                      "\"open+30m\"")


def check_ping_url(url: str, section: str = "notify") -> None:
    """A URL urllib will send as it is; ConfigError otherwise, showing its host at most: for healthchecks the
    path is the secret that lets anyone ping."""
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # each raises ValueError when it does not parse
    except ValueError:
        raise ConfigError(f"[{section}] ping_url does not parse: check its port (0 to 65535) and the brackets of an "
                          "IPv6 address") from None
    shown = f"{parts.scheme}://{host}/..." if host else "(not shown)"
    if parts.scheme.lower() not in ("http", "https") or not host:
        problem = "expected an http:// or https:// URL with a host"
    elif not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        problem = "it holds a blank, a control or a non-ASCII character: percent-encode it (a blank is %20)"
    else:
        remember(parts.path.strip("/"))  # the secret part: no log line or message shows it, whatever quotes it
        return
    raise ConfigError(f"[{section}] ping_url {shown}: {problem}")


def parse_size(text: str | int) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = SIZE.match(str(text).strip())
    if not match:
        raise ConfigError(f"[logging] rotation = {text!r}: expected a size like \"10 MB\"")
    factor = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[match[2].upper()]
    return int(float(match[1]) * factor)


def parse_date(value: Any, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        raise ConfigError(f"{what} = {value!r}: expected a date YYYY-MM-DD")
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{what} = {value!r}: expected a date YYYY-MM-DD") from None


def parse_seconds(value: Any, what: str) -> float:
    """A task's duration (timeout, retry_delay, wait_timeout): seconds, or "30m", "2h"; positive, at most
    LONGEST_SECONDS."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value > 0 or math.isinf(value):  # nan compares false: it is no duration either
            raise ConfigError(f"{what} = {value}: must be a positive number of seconds")
        seconds = value
    else:
        match = DURATION.match(str(value).strip())
        if not match or int(match[1]) <= 0:
            raise ConfigError(f"{what} = {value!r}: expected seconds or a duration like \"30m\" or \"2h\"")
        seconds = int(match[1]) * {"s": 1, None: 1, "m": 60, "h": 3600}[match[2]]
    if seconds > LONGEST_SECONDS:
        raise ConfigError(f"{what} = {value!r}: must be at most {LONGEST_SECONDS} seconds (366 days)")
    return float(seconds)


def table(raw: dict, name: str) -> dict:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    only_keys(value, name, None)
    return value


KNOWN_KEYS = {
    "schedule": {"calendar", "window_start", "window_minutes", "lookback_sessions", "auto_recover",
                 "recover_during_market_hours", "deadline_minutes", "catchup"},
    "run": {"max_parallel", "max_attempts", "retry_backoff_minutes", "pythonpath", "slow_factor",
            "slow_min_seconds", "stop_grace_seconds", "max_run_minutes", "containment"},
    "redis": {"url", "password_file", "key_prefix", "status_ttl_days", "lock_lease_seconds", "min_replicas",
              "replica_timeout_seconds", "wait_aof"},
    "logging": {"dir", "rotation", "retention", "level"},
    "calendar": {"closed", "early_closes", "sessions", "expiry_warning_days"},
    "metrics": {"textfile", "pushgateway"},
    "notify": {"ping_url", "ping_timeout"},
    "tasks": {"name", "command", "python", "builtin", "params", "after", "timeout", "retries", "retry_delay",
              "catchup", "market_closed_only", "wait_for", "wait_timeout", "redis_env"},
}
# A [jobs.NAME] table: its schedule (defaults: [schedule]'s), its keys, tasks and pings.
JOB_KEYS = (KNOWN_KEYS["schedule"] - {"calendar"}) | {"key_prefix", "tasks", "notify"}


def only_keys(table: dict, section: str, known: set[str] | None, where: str | None = None) -> None:
    known = KNOWN_KEYS[section] if known is None else known
    for key in table:
        if key not in known:
            where = where or (f"in [{section}]" if section else "at top level")
            hint = ", ".join(sorted(known))
            raise ConfigError(f"unknown key '{key}' {where} (known: {hint})")
