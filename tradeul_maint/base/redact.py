"""Redaction: what is removed from every text the tool shows, logs, stores or sends.

Two kinds of secret. The tool's own, the live Redis password, is known once a URL or the
password file has been read (`remember`): it is removed verbatim wherever it appears,
in each form it travels in (as typed, percent-encoded, JSON-escaped). The others are
found by their shape, in task output and error messages: a URL's user information,
`NAME=value` with a secret-like name, `--password X`, `redis-cli -a X`, Redis `AUTH X`,
an Authorization header or a bearer token, and the token formats gitleaks has rules for
that start with a fixed prefix (AWS key ids, GitHub, GitLab, Slack, Stripe, Google, npm,
PyPI, OpenAI, JWTs, private key blocks). Every pattern is anchored on a name or a prefix:
no entropy guessing, which would also hide run ids, hashes and checksums
(docs/performance.md compares this with detect-secrets' plugins).

This module imports nothing of the tool's, so anything may use it.
"""

from __future__ import annotations

import json
import re
import traceback
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

HIDDEN = "***"
MIN_VERBATIM = 8  # a shorter password is removed only where it stands alone (not inside a longer word)

# --- the tool's own secrets --------------------------------------------------------------

_known: set[str] = set()
_forms: tuple[str, ...] = ()  # every form of every known secret, longest first
_short: re.Pattern | None = None  # the forms shorter than MIN_VERBATIM, as whole words


def remember(secret: str | None) -> None:
    """From now on, remove `secret` (a password the tool uses) from everything this process writes."""
    global _forms, _short
    if not secret or secret in _known:
        return
    _known.add(secret)
    forms = set(_forms)
    for known in _known:
        encoded = quote(known, safe="")
        forms.update({known, encoded, quote(known), quote_plus(known), re.sub("%[0-9A-F]{2}", _lower, encoded),
                      json.dumps(known, ensure_ascii=False)[1:-1], json.dumps(known)[1:-1]})
    _forms = tuple(sorted(forms, key=len, reverse=True))
    short = [re.escape(f) for f in _forms if len(f) < MIN_VERBATIM]
    _short = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(short) + r")(?![A-Za-z0-9])") if short else None


def _lower(match: re.Match) -> str:
    return match[0].lower()


def remember_url(url: str | None) -> None:
    """The password in a URL's user information, decoded and as written.

    Both as a URL parser reads it and up to the URL's last '@': an unencoded '/', '?' or '#'
    in a password makes a parser cut it short, and the shorter reading may be what a
    server's error message repeats.
    """
    if not url or "@" not in url:
        return
    candidates = [url.partition("://")[2].rpartition("@")[0].partition(":")[2]]
    try:
        candidates.append(urlsplit(url).password or "")
    except ValueError:
        pass
    for password in filter(None, candidates):
        remember(password)
        remember(unquote(password))


def forget_all() -> None:
    """Tests: a fresh process knows no secret."""
    global _forms, _short
    _known.clear()
    _forms, _short = (), None


def _remove_known(text: str) -> str:
    for form in _forms:
        if len(form) >= MIN_VERBATIM and form in text:
            text = text.replace(form, HIDDEN)
    if _short is not None:
        text = _short.sub(HIDDEN, text)
    return text


# --- secrets by their shape -------------------------------------------------------------------

# A name that says its value is a secret: any case, with or without "_", "-" or "." around or
# inside. "auth" only as a word's end ("REDISCLI_AUTH", not "author").
_SECRET_WORD = (r"(?:pass(?:word|wd|phrase)|pwd|secret|token|api[_.-]?key|access[_.-]?key|private[_.-]?key"
                r"|auth(?![\w.-]))")
_VALUE = r"(\"[^\"\n]*\"|'[^'\n]*'|[^\s,;&\"')}\]]+)"  # quoted, or up to a blank or a delimiter
_ARG = r"(\"[^\"\n]*\"|'[^'\n]*'|[^\s\"'-][^\s\"']*)"  # a command-line argument that is not the next option

_PRIVATE_KEY = re.compile(r"(-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----)[\s\S]*?"
                          r"(-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----|\Z)")
# A URL's user information: everything between "://" and the last "@" before the next URL or
# the end of the line. A password may hold an unencoded "/", "?", "#", "@" or blank, which makes
# a URL parser see part of it as the host, path, query or fragment, so the only safe cut is the
# last "@"; the user is shown only when the user information is plainly "user:password".
_URL_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)((?:(?!://)[^\n])*)@(?=[\w\[%/-])", re.IGNORECASE)
_AUTHORIZATION = re.compile(r"(\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?)([^\s\"'][^\n\"']*)",
                            re.IGNORECASE)
_BEARER = re.compile(r"(\bbearer[ \t]+)([A-Za-z0-9._~+/=-]+)", re.IGNORECASE)
_REDIS_CLI_A = re.compile(r"(\bredis-cli\b[^\n]*?[ \t]-a[ \t]+)" + _ARG)
_AUTH_COMMAND = re.compile(r"((?<![\w-])(?:AUTH|[\"'](?i:auth)[\"'])[ \t]+)" + _ARG +
                           r"(?:([ \t]+)" + _ARG + r"(?=[ \t]*(?:\n|$)))?")
_FLAG = re.compile(r"((?<![\w.-])--?(?:[\w.-]*" + _SECRET_WORD + r"[\w.-]*|pass)[ \t]+)" + _ARG, re.IGNORECASE)
# `NAME=value` and `NAME: value` (quoted or not, JSON's `"name": "value"` too) with a secret-like
# name; and `requirepass value` (redis.conf, CONFIG SET).
_PAIR = re.compile(r"((?<![\w.-])[\w.-]*" + _SECRET_WORD + r"[\w.-]*[\"']?[ \t]*[=:][ \t]*|\brequirepass[ \t]+)"
                   + _VALUE, re.IGNORECASE)
_SECRET_NAME = re.compile(_SECRET_WORD, re.IGNORECASE)
# Token formats with a fixed prefix, after gitleaks' rules of the same names.
TOKEN_RULES = {
    "aws-access-token": r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
    "github-token": r"\b(?:gh[pousr]_[0-9A-Za-z]{36}|github_pat_\w{82})\b",
    "gitlab-pat": r"\bglpat-[\w-]{20}\b",
    "slack-token": r"\bxox[baprse]-[0-9A-Za-z-]{10,}",
    "stripe-access-token": r"\b[rs]k_(?:test|live|prod)_[0-9A-Za-z]{10,99}\b",
    "gcp-api-key": r"\bAIza[\w-]{35}\b",
    "npm-access-token": r"\bnpm_[0-9A-Za-z]{36}\b",
    "pypi-upload-token": r"\bpypi-AgEIcHlwaS5vcmc[\w-]{50,}",
    "openai-api-key": r"\bsk-(?:(?:proj|svcacct|admin)-)?[\w-]{20,}T3BlbkFJ[\w-]{20,}",
    "jwt": r"\bey[A-Za-z0-9]{17,}\.ey[A-Za-z0-9/\\_-]{17,}\.(?:[A-Za-z0-9/\\_-]{10,}={0,2})?",
}
_TOKENS = re.compile("|".join(f"(?:{rule})" for rule in TOKEN_RULES.values()))


def _keep_first(match: re.Match) -> str:
    """The name part kept, every value part hidden (quotes kept), separators kept."""
    parts = [match[1]]
    for i in range(2, len(match.groups()) + 1):
        value = match[i]
        if value is None:
            continue
        if i % 2 == 1:  # a separator between two values
            parts.append(value)
            continue
        quote_char = value[0] if value[0] in "\"'" else ""
        parts.append(f"{quote_char}{HIDDEN}{quote_char}")
    return "".join(parts)


def _hide_userinfo(match: re.Match) -> str:
    userinfo = match[2]
    user, colon, _ = userinfo.partition(":")
    plain = colon and not any(c in userinfo for c in "/?#@") and not any(c.isspace() for c in userinfo)
    return f"{match[1]}{user + ':' if plain else ''}{HIDDEN}@"


# Each rule runs only on the lines that hold one of its words (found with str.find, at C speed):
# most task output holds none, and a regex tried at every position of every line costs 10x more.
_RULES: tuple[tuple[re.Pattern, Any, tuple[str, ...]], ...] = (
    (_AUTHORIZATION, _keep_first, ("authorization",)),
    (_BEARER, _keep_first, ("bearer",)),
    (_REDIS_CLI_A, _keep_first, ("redis-cli",)),
    (_AUTH_COMMAND, _keep_first, ("auth",)),
    (_FLAG, _keep_first, ("pass", "pwd", "secret", "token", "key", "auth")),
    (_PAIR, _keep_first, ("pass", "pwd", "secret", "token", "key", "auth")),
    (_TOKENS, lambda match: HIDDEN, ("akia", "asia", "abia", "acca", "a3t", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
                                     "github_pat_", "glpat-", "xox", "_test_", "_live_", "_prod_", "aiza", "npm_",
                                     "pypi-", "t3blbkfj", ".ey")),
)


_WORDS = tuple(sorted({word for _, _, words in _RULES for word in words}))
SHORT = 512  # characters: below this, one pass over the words decides whether any rule needs to run at all


def scrub(text: str) -> str:
    """`text` without any secret: the tool's own, and those found by their shape."""
    if "://" in text:  # first, so that a password holding a '/', '#', '@' or blank goes with all its URL's userinfo
        text = _on_lines_with(("://",), text.lower(), text, _URL_USERINFO, _hide_userinfo) or text
    if _forms:
        text = _remove_known(text)
    low = text.lower()
    if len(text) < SHORT and not any(word in low for word in _WORDS):  # most log fields: an event, a date, a count
        return text
    if "PRIVATE KEY" in text:
        text = _PRIVATE_KEY.sub(lambda m: f"{m[1]}{HIDDEN}{m[2]}", text)
        low = text.lower()
    for pattern, replace, words in _RULES:
        changed = _on_lines_with(words, low, text, pattern, replace)
        if changed is not None:
            text, low = changed, changed.lower()
    return text


def _on_lines_with(words: tuple[str, ...], low: str, text: str, pattern: re.Pattern, replace) -> str | None:
    """`pattern` substituted on the lines of `text` that hold one of `words` (in `low`, its lower case);
    None when nothing changed."""
    if len(low) != len(text):  # lower() changed the length (a few non-ASCII letters): no line map, do it all
        result = pattern.sub(replace, text)
        return result if result != text else None
    spans = []
    for word in words:
        at = low.find(word)
        while at >= 0:
            start = low.rfind("\n", 0, at) + 1
            end = low.find("\n", at)
            end = len(low) if end < 0 else end
            spans.append((start, end))
            at = low.find(word, end)
    if not spans:
        return None
    parts, done, changed = [], 0, False
    for start, end in sorted(set(spans)):  # whole lines: two spans are the same line or apart
        line = text[start:end]
        result = pattern.sub(replace, line)
        if result != line:
            parts += [text[done:start], result]
            done, changed = end, True
    if not changed:
        return None
    parts.append(text[done:])
    return "".join(parts)


def scrub_value(value: Any, key: str = "") -> Any:
    """`scrub` through the strings of a value, its lists and dicts; a string named like a secret is hidden
    (a number is not: `tokens_revoked = 12` is a count)."""
    if key and isinstance(value, str) and _SECRET_NAME.search(key):
        return HIDDEN
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_value(v) for v in value]
    return value


def scrub_strings(value: Any) -> Any:
    """`scrub` through the strings of a document (its keys are names the tool chose: task names, fields)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_strings(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_strings(v) for v in value]
    return value


def scrubbed_traceback() -> str:
    """The exception being handled, formatted as `traceback.print_exc` would print it, scrubbed."""
    return scrub(traceback.format_exc())
