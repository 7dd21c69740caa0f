"""The one JSON reader for what others may have written: Redis values, log lines, the calendar cache.

`json.loads` accepts things that break a reader later: NaN and Infinity (Python's own
`json.dumps` writes them; `status --json` would pass them on as non-standard JSON, and
arithmetic on them fails far from the read), numbers too large to be a float (`1e999` is
infinity) or too long to be an int, and nesting deep enough to raise RecursionError, in
the parser or in any code that walks the value afterwards. Here each of these is a
`BadJSON`, a ValueError, like any syntax error: every caller already treats a ValueError
as "unreadable" (a `corrupt` status, a foreign lock, a log line shown raw, a cache
rebuilt). Bytes must be UTF-8. A lone surrogate (`"\\ud800"`: valid JSON, which no
stream can print) becomes U+FFFD, so the rest of the value stays readable.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64  # what this tool writes is 4 levels deep
MAX_INT = 2**63  # a Redis integer, an int64 anywhere else
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadJSON(ValueError):
    """JSON this tool does not read: NaN, a number out of range, or nesting deeper than MAX_DEPTH."""


def loads(raw: str | bytes | bytearray) -> Any:
    """`json.loads`, refusing what `BadJSON` says; ValueError (BadJSON among them) for anything unreadable."""
    text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    if text.count("[") + text.count("{") > MAX_DEPTH and depth(text) > MAX_DEPTH:
        raise BadJSON(f"nested more than {MAX_DEPTH} levels deep")
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except RecursionError:  # depth() says otherwise only for text that is not JSON: refused all the same
        raise BadJSON("nested too deep") from None
    # "\ud800" alone is valid JSON, and a string holding it cannot be printed (UnicodeEncodeError).
    return _whole_characters(value) if "\\ud" in text.lower() else value


def depth(text: str) -> int:
    """How deep the arrays and objects of `text` nest, strings left out; without recursion, at C speed."""
    brackets = _BRACKETS.findall(_STRINGS.sub("", text))
    return max(accumulate(1 if b in "[{" else -1 for b in brackets), default=0)


def dumps(value: Any, **options: Any) -> str:
    """`json.dumps` that never writes NaN or Infinity (ValueError instead): what scripts read must be JSON."""
    return json.dumps(value, allow_nan=False, **options)


def sanitized(value: Any, levels: int = MAX_DEPTH // 2) -> Any:
    """`value` as it may be stored and read back: a number `loads` would refuse, and what nests deeper than
    `levels`, become strings."""
    if isinstance(value, float) and not math.isfinite(value) or \
            isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value < MAX_INT:
        return str(value)
    if isinstance(value, (dict, list, tuple)) and levels <= 0:
        return "..."
    if isinstance(value, dict):
        return {str(k): sanitized(v, levels - 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitized(v, levels - 1) for v in value]
    return value


def _whole_characters(value: Any) -> Any:
    """`value` with each lone surrogate of its strings (keys too) replaced by U+FFFD; pairs were joined by the parser."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_whole_characters(k): _whole_characters(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_characters(v) for v in value]
    return value


def _constant(name: str) -> Any:
    raise BadJSON(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadJSON(f"{text[:20]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text) > 20:
        raise BadJSON(f"{text[:20]}... is out of range")
    value = int(text)
    if not -MAX_INT <= value < MAX_INT:
        raise BadJSON(f"{text} is out of range")
    return value
