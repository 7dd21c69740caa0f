"""Redis glob patterns (SCAN MATCH, KEYS) as the server reads them, and one question about them.

The question is whether a pattern can match ANY key that begins with a given string (the
tool's `<prefix>:`), asked before a delete runs. Sample keys cannot answer it: a pattern
like `maintenance:status:2026-1*` misses every sample but one date. So the pattern is read
the way Redis's `stringmatchlen` reads it (`*`, `?`, `[..]`, `[^..]`, ranges, backslash
escapes, and its quirks: an unclosed `[` class, `[]` matching nothing, a range with its
ends reversed) into a sequence of tokens, each `*` or a set of bytes, and run as a small
automaton over the prefix; what is left of the pattern must then be able to match some
ending. Matching is on bytes, as the server's is, and case-sensitive, as SCAN's is.
"""

from __future__ import annotations

from typing import Union

STAR = None  # the token for `*`; every other token is the set of bytes it accepts at one position
Token = Union[frozenset[int], None]
ANY_BYTE = frozenset(range(256))
_BACKSLASH, _CLOSE, _DASH, _CARET = b"\\]-^"


def tokens(pattern: str | bytes) -> list[Token]:
    """The pattern as Redis reads it: `*` (consecutive ones merged) or the set of bytes matched at a position."""
    p = pattern.encode() if isinstance(pattern, str) else pattern
    out: list[Token] = []
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == ord("*"):
            if not out or out[-1] is not STAR:
                out.append(STAR)
            i += 1
        elif c == ord("?"):
            out.append(ANY_BYTE)
            i += 1
        elif c == ord("["):
            accepted, i = _char_class(p, i + 1)
            out.append(accepted)
        elif c == _BACKSLASH and n - i >= 2:
            out.append(frozenset((p[i + 1],)))
            i += 2
        else:
            out.append(frozenset((c,)))
            i += 1
    return out


def _char_class(p: bytes, i: int) -> tuple[frozenset[int], int]:
    """The class that starts at `p[i]` (just after `[`) and the index after it, step for step as stringmatchlen.

    Like the server: `\\x` is x, `a-z` a range (its ends in either order), `]` first
    closes an empty class, and a class that never closes ends with the pattern.
    """
    n = len(p)
    negate = i < n and p[i] == _CARET
    if negate:
        i += 1
    members: set[int] = set()
    while True:
        rest = n - i
        if rest >= 2 and p[i] == _BACKSLASH:
            i += 1
            members.add(p[i])
        elif rest > 0 and p[i] == _CLOSE:
            break
        elif rest == 0:
            i -= 1  # the server steps back onto the last byte, which the step after the class consumes
            break
        elif rest >= 3 and p[i + 1] == _DASH:
            low, high = sorted((p[i], p[i + 2]))
            members.update(range(low, high + 1))
            i += 2
        else:
            members.add(p[i])
        i += 1
    accepted = ANY_BYTE - members if negate else frozenset(members)
    return accepted, i + 1


def matches(pattern: str | bytes, key: str | bytes) -> bool:
    """Whether the pattern matches the whole key, as SCAN MATCH decides it (for a non-empty key)."""
    toks = tokens(pattern)
    return len(toks) in _advance(toks, key.encode() if isinstance(key, str) else key)


def can_match_key_starting_with(pattern: str | bytes, start: str | bytes) -> bool:
    """Whether some key that begins with `start` matches the pattern (`start` not empty)."""
    toks = tokens(pattern)
    states = _advance(toks, start.encode() if isinstance(start, str) else start)
    # What is left after some state must match some ending: a class that accepts no byte never can.
    return any(all(t is STAR or t for t in toks[s:]) for s in states)


def _advance(toks: list[Token], data: bytes) -> set[int]:
    """The token positions the pattern can be at after reading `data` (a set of automaton states)."""
    states = _closure(toks, {0})
    for byte in data:
        following = set()
        for s in states:
            if s == len(toks):
                continue
            token = toks[s]
            if token is STAR:
                following.add(s)
            elif byte in token:
                following.add(s + 1)
        states = _closure(toks, following)
        if not states:
            break
    return states


def _closure(toks: list[Token], states: set[int]) -> set[int]:
    """A `*` may match nothing: a state before one is also a state after it."""
    out = set(states)
    for s in states:
        while s < len(toks) and toks[s] is STAR:
            s += 1
            out.add(s)
    return out
