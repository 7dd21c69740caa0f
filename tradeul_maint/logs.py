"""Where log entries go: JSON lines in `maintenance.log` and `maintenance_errors.log`, and a short console form.

Every entry is one event: the message is the event name (`task_completed`), the fields
are bound with `logger.bind(...)`. Files get every field as one JSON object per line
(what `logs --json` and `jq` read); the console gets warnings and errors only, unless
--verbose, because cron mails whatever a job prints.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from loguru import logger

from tradeul_maint.settings import Settings

DEFAULT_LOG_DIR = Path("/var/log/tradeul")
MAIN_LOG = "maintenance.log"
ERRORS_LOG = "maintenance_errors.log"
_SECRET = re.compile(r"((?:[a-z+]+://[^/:@\s]*:)|(?:password\s*[=:]\s*))([^@\s,;&\"']+)", re.IGNORECASE)


def scrub(text: str) -> str:
    """Remove passwords from URLs (`redis://user:secret@`) and `password=secret` pairs."""
    return _SECRET.sub(lambda m: m.group(1) + "***", text)


def _patch(record) -> None:
    record["message"] = scrub(record["message"])
    for key, value in record["extra"].items():
        if isinstance(value, str):
            record["extra"][key] = scrub(value)


def _json_line(record) -> str:
    extra = {k: v for k, v in record["extra"].items() if k != "console"}
    entry = {"time": record["time"].astimezone().isoformat(timespec="milliseconds"),
             "level": record["level"].name, "event": record["message"], **extra}
    if record["exception"] is not None:
        exc = record["exception"]
        entry["exception"] = scrub(f"{exc.type.__name__}: {exc.value}")
    record["extra"]["_json"] = json.dumps(entry, default=str, ensure_ascii=False)
    return "{extra[_json]}\n"


def _console_line(record) -> str:
    fields = " ".join(f"{k}={_short(v)}" for k, v in record["extra"].items()
                      if k not in ("console", "_json", "run_id", "output") and v is not None)
    return "<level>{level: <7}</level> {message}" + (" " + fields.replace("{", "{{").replace("}", "}}")
                                                      if fields else "") + "\n"


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:200] + "..."


def log_dir_for(settings: Settings) -> Path:
    return settings.log_dir_override or settings.logging.dir or DEFAULT_LOG_DIR


def configure_logging(settings: Settings | None, verbose: bool = False, quiet: bool = False) -> Path | None:
    """Install the sinks for this invocation and return the log directory in use."""
    logger.remove()
    logger.configure(patcher=_patch)
    console_level = "DEBUG" if verbose else "ERROR" if quiet else "WARNING"
    logger.add(sys.stderr, level=console_level, format=_console_line, colorize=None, backtrace=verbose,
               diagnose=False, filter=lambda r: r["extra"].get("console", True) or verbose)
    if settings is None:
        return None
    directory = _writable_dir(log_dir_for(settings), settings.state_dir / "logs")
    common = dict(format=_json_line, backtrace=False, diagnose=False, enqueue=False, encoding="utf-8",
                  rotation=settings.logging.rotation_bytes, retention=settings.logging.retention)
    logger.add(directory / MAIN_LOG, level=settings.logging.level, **common)
    logger.add(directory / ERRORS_LOG, level="ERROR", **common)
    return directory


def _writable_dir(preferred: Path, fallback: Path) -> Path:
    for candidate in (preferred, fallback):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                if candidate != preferred:
                    logger.bind(preferred=str(preferred), using=str(candidate)).warning("log_dir_not_writable")
                return candidate
        except OSError:
            continue
    raise OSError(f"neither {preferred} nor {fallback} is writable for logs")
