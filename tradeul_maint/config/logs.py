"""Where log entries go, as the settings say: the log directory (or its fallback), the level, and the console.

The files are base/logfile.py's (JSON lines, shared by many processes); the console gets
a short form, warnings and errors only, unless --verbose, because cron mails whatever a
job prints.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tradeul_maint.base.errors import ConfigError
from tradeul_maint.base.logfile import ERRORS_LOG, MAIN_LOG, RotatingFile, notice_line, patch_record, \
    warn_on_write_failure
from tradeul_maint.base.redact import scrub
from tradeul_maint.config.settings import Settings

DEFAULT_LOG_DIR = Path("/var/log/tradeul")
DIR_MODE = 0o750


def _console_line(record) -> str:
    fields = " ".join(f"{k}={_short(v)}" for k, v in record["extra"].items()
                      if k not in ("console", "run_id", "output") and v is not None)
    return "<level>{level: <7}</level> {message}" + (" " + fields.replace("{", "{{").replace("}", "}}")
                                                      if fields else "") + "\n"


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:200] + "..."


# --- the console ----------------------------------------------------------------


class ConsoleSink:
    """stderr (looked up at each write: tests swap it) or the stream given, with credentials scrubbed."""

    def __init__(self, preamble: Callable[[], str] | None = None, stream=None):
        self._preamble = preamble
        self._stream = stream

    def after_fork(self, console=None) -> None:
        """In a forked task process, whose own stderr is its captured output: write to `console`."""
        self._preamble = None
        self._stream = console or self._stream

    def write(self, message: str) -> None:
        text = scrub(str(message))
        if self._preamble is not None:
            preamble, self._preamble = self._preamble, None
            text = preamble() + text
        stream = self._stream or sys.stderr
        stream.write(text)
        stream.flush()


# --- configuration -----------------------------------------------------------------


def log_dir_for(settings: Settings) -> Path:
    """The configured log directory: --log-dir, TRADEUL_MAINT_LOG_DIR, [logging].dir, or the default."""
    return settings.log_dir_override or settings.logging.dir or DEFAULT_LOG_DIR


def fallback_log_dir(settings: Settings) -> Path:
    return settings.state_dir / "logs"


@dataclass(frozen=True)
class LogDir:
    path: Path
    fallback_reason: str | None = None  # why the configured directory is not used


@dataclass(frozen=True)
class Sinks:
    """What `configure_logging` installed in this process: a task's process installs the same."""

    directory: Path | None
    verbose: bool
    quiet: bool


installed = Sinks(None, False, False)
_sinks: list[RotatingFile | ConsoleSink] = []  # what configure_logging added, for after_fork


def after_fork(console=None) -> None:
    """Make this freshly forked process's copy of the sinks its own (see RotatingFile.after_fork).

    Much cheaper than configure_logging again (loguru's `add` costs milliseconds), which a
    task process started per attempt would pay every time.
    """
    for sink in _sinks:
        sink.after_fork(console)


@dataclass(frozen=True)
class FallbackNotice:
    """The one line saying the log is not where the settings point, and why."""

    preferred: Path
    using: Path
    reason: str

    def file_line(self) -> str:
        return notice_line("log_dir_fallback", preferred=str(self.preferred), using=str(self.using),
                           reason=self.reason)

    def console_line(self) -> str:
        return f"WARNING log_dir_fallback: {self.preferred} is not writable ({self.reason}); logging to {self.using}\n"


def configure_logging(settings: Settings | None, verbose: bool = False, quiet: bool = False,
                      files: bool = True, directory: Path | None = None) -> LogDir | None:
    """Install the sinks for this invocation and return the log directory in use, and why it fell back
    (None without files).

    When the configured directory is not writable the files go to <state-dir>/logs, and a
    one-line `log_dir_fallback` notice precedes this process's first entry in the file and
    its first line on the console: a cron tick with nothing to do stays silent, since cron
    mails anything it prints, while any run that logs anything says where its log went.
    A run's supervisor passes the `directory` its runner chose.
    """
    from loguru import logger  # here, not above: the cron tick uses this module's log-dir checks without it

    global installed
    # One warning per invocation (tests run many in one process). The processes a runner starts
    # (given its `directory`) write to the same files and say nothing: the runner says it once.
    warn_on_write_failure(directory is None)
    logger.remove()
    logger.configure(patcher=patch_record)
    if directory is not None:
        directory = LogDir(directory)
    elif settings is not None and files:
        directory = choose_log_dir(log_dir_for(settings), fallback_log_dir(settings))
    notice = None
    if directory is not None and directory.fallback_reason:
        notice = FallbackNotice(log_dir_for(settings), directory.path, directory.fallback_reason)
    console_level = "DEBUG" if verbose else "ERROR" if quiet else "WARNING"
    _sinks.clear()
    _sinks.append(ConsoleSink(notice.console_line if notice else None))
    logger.add(_sinks[-1], level=console_level,
               format=_console_line, colorize=sys.stderr.isatty(), backtrace=False, diagnose=False,
               filter=lambda r: r["extra"].get("console", True) or verbose)
    installed = Sinks(directory.path if directory else None, verbose, quiet)
    threading.excepthook = _thread_failed
    if directory is None:
        return None
    log = settings.logging
    common = dict(format=lambda record: "{message}", colorize=False, backtrace=False, diagnose=False,
                  enqueue=False)
    _sinks.append(RotatingFile(directory.path / MAIN_LOG, log.rotation_bytes, log.retention,
                               notice.file_line if notice else None))
    logger.add(_sinks[-1],
               level=log.level, **common)
    _sinks.append(RotatingFile(directory.path / ERRORS_LOG, log.rotation_bytes, log.retention))
    logger.add(_sinks[-1],
               level="ERROR", **common)
    return directory


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """A thread that raised says so in one scrubbed log line (its traceback goes to the file), never a traceback on
    stderr that cron would mail."""
    if args.exc_type is SystemExit:
        return
    from loguru import logger

    thread = args.thread.name if args.thread is not None else "?"
    logger.opt(exception=(args.exc_type, args.exc_value, args.exc_traceback)) \
        .bind(thread=thread, error=f"{args.exc_type.__name__}: {args.exc_value}").error("thread_failed")


def choose_log_dir(preferred: Path, fallback: Path) -> LogDir:
    """The preferred directory when this process can write its logs there, else the fallback."""
    reason = _unwritable(preferred)
    if reason is None:
        return LogDir(preferred)
    fallback_reason = _unwritable(fallback)
    if fallback_reason is None:
        return LogDir(fallback, reason)
    raise ConfigError(f"cannot write logs to {preferred} ({reason}) nor to {fallback} ({fallback_reason}): "
                      "set --log-dir or [logging] dir to a writable directory")


def _unwritable(directory: Path) -> str | None:
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    for path in (directory, directory / MAIN_LOG, directory / ERRORS_LOG):
        if path.exists() and not os.access(path, os.W_OK):
            return f"{os.strerror(errno.EACCES).lower()}: {path}"
    return None
