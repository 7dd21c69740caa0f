"""A value read from the configuration file, checked for its type and said in TOML's words.

Shared by the settings and the built-ins' parameters (builtin_params.py), which both read values a person typed.
"""

from __future__ import annotations

from typing import Any

from tradeul_maint.base.errors import ConfigError

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
