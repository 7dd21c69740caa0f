"""The built-in tasks' names and parameters, checked when the settings are loaded.

Each built-in (run/builtins.py holds what it does) accepts these parameters, of these
types, combined as its check says; `validate_builtin` runs for every `builtin = ...` task
of the configuration, so a typo in `params` is a configuration error (exit 78) rather than
a failure at 17:00. The declarations live with the configuration, below the runner, so
that loading the settings never imports the built-ins themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from tradeul_maint.base.errors import ConfigError
from tradeul_maint.config.values import check_type
from tradeul_maint.redisio.connection import check_url

AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])?$")
AGE_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Params:
    required: dict[str, type | tuple]
    optional: dict[str, type | tuple]
    check: Callable[[dict[str, Any], str], None] | None = None  # how the parameters combine


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


BUILTINS: dict[str, Params] = {
    "redis.delete_keys": Params({"patterns": list}, {"dry_run": bool, "url": str}, _check_delete_keys),
    "redis.trim_streams": Params({}, {"streams": list, "patterns": list, "maxlen": int, "max_age": (int, float, str),
                                      "approximate": bool, "url": str}, _check_trim_streams),
    "redis.bgsave": Params({}, {"timeout": (int, float, str), "url": str}, _check_bgsave),
}


def validate_builtin(name: str, params: dict[str, Any], section: str) -> None:
    entry = BUILTINS.get(name)
    if entry is None:
        raise ConfigError(f"[{section}] builtin = {name!r}: unknown built-in (known: {', '.join(sorted(BUILTINS))})")
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
