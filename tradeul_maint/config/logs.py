"""Where log entries go: JSON lines in `maintenance.log` and `maintenance_errors.log`, and a short console form.

Every entry is one event: the message is the event name (`task_completed`), the fields
are bound with `logger.bind(...)`. Files get one JSON object per line (what `logs`,
`logs --json` and `jq` read); the console gets warnings and errors only, unless
--verbose, because cron mails whatever a job prints.

Overlapping cron runs write to the same files, so the file sink is ours rather than
loguru's (whose rotation assumes one process): each entry is a single O_APPEND write
under a shared flock, and rotation happens under the exclusive flock, after re-checking
the file, so no entry is lost or lands in a file that is being renamed.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import re
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tradeul_maint.base.errors import ConfigError
from tradeul_maint.base.redact import scrub, scrub_value
from tradeul_maint.config.settings import Settings

DEFAULT_LOG_DIR = Path("/var/log/tradeul")
MAIN_LOG = "maintenance.log"
ERRORS_LOG = "maintenance_errors.log"
FILE_MODE = 0o640  # owner and group (the operators' group) only: entries carry task output
DIR_MODE = 0o750
TRACEBACK_LIMIT = 16384
UTC = dt.timezone.utc


def _json(entry: dict[str, Any]) -> str:
    """One JSON line; every string in it scrubbed, values json cannot hold (stringified) included.

    The strings are scrubbed before they are encoded, never the encoded line: in JSON a
    newline is the two characters `\\n`, which would run one `NAME=value` into the next.
    """
    return json.dumps(scrub_value(entry), default=lambda value: scrub(str(value)), ensure_ascii=False) + "\n"


def _patch(record) -> None:
    record["message"] = scrub(record["message"])
    for key, value in record["extra"].items():
        record["extra"][key] = scrub_value(value, key)


# --- the entry format -------------------------------------------------------------

_LEADING = ("date", "task", "run_id")
_INTERNAL = {"console"}


def entry_line(record) -> str:
    """One JSON object: time (UTC, with its offset), level, event, date, task, run id, then the other fields."""
    extra = record["extra"]
    entry: dict[str, Any] = {"time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
                             "level": record["level"].name, "event": record["message"]}
    for key in _LEADING:
        if extra.get(key) is not None:
            entry[key] = extra[key]
    for key, value in extra.items():
        if key not in entry and key not in _INTERNAL and value is not None:
            entry[key] = value
    if record["exception"] is not None:
        exc = record["exception"]
        entry["exception"] = f"{exc.type.__name__}: {exc.value}" if exc.type else str(exc.value)
        text = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
        entry["traceback"] = text if len(text) <= TRACEBACK_LIMIT else "..." + text[-TRACEBACK_LIMIT:]
    return _json(entry)


def notice_line(event: str, level: str = "WARNING", **fields: Any) -> str:
    entry = {"time": dt.datetime.now(UTC).isoformat(timespec="milliseconds"), "level": level, "event": event,
             **fields}
    return _json(entry)


def _console_line(record) -> str:
    fields = " ".join(f"{k}={_short(v)}" for k, v in record["extra"].items()
                      if k not in ("console", "run_id", "output") and v is not None)
    return "<level>{level: <7}</level> {message}" + (" " + fields.replace("{", "{{").replace("}", "}}")
                                                      if fields else "") + "\n"


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:200] + "..."


# --- the multi-process sink --------------------------------------------------------


def rotated_path(path: Path, number: int) -> Path:
    """`maintenance.log.1` is the newest rotated file, `.2` the one before, and so on."""
    return path.with_name(f"{path.name}.{number}")


def rotated_numbers(path: Path) -> list[int]:
    """The numbers of the rotated files that exist next to `path`, ascending (newest first)."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)$")
    try:
        names = os.listdir(path.parent)
    except OSError:  # no directory (yet), or not one
        return []
    return sorted(int(m[1]) for m in map(pattern.match, names) if m)


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


class RotatingFile:
    """An append-only log file shared by any number of processes, rotated at `max_bytes` keeping `retention`.

    Every entry is one O_APPEND write under an exclusive flock on `.<name>.lock`, so
    entries from many processes never interleave, and an entry is in the file whole or not
    at all: when a write fails part way (a full disk), the file is cut back to where the
    entry began before the lock is let go, so no torn line is left for the next entry to
    be glued to. A write that fails costs one warning line on stderr per run (cron mails
    it; see `configure_logging`), never an exception: the run goes on. Rotation happens under the same lock,
    after looking at the file again (another process may have rotated it a moment ago:
    the inode changed, or it is small again); it shifts `.1`..`.N` and renames the file.
    A process whose file was rotated by another notices the new inode on its next append
    and reopens. Readers take the lock shared while they open the set of files.
    """

    def __init__(self, path: Path, max_bytes: int, retention: int, preamble: Callable[[], str] | None = None):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.retention = retention
        self._preamble = preamble  # written before this process's first entry (the fallback notice)
        self._fd: int | None = None
        self._id: tuple[int, int] | None = None
        self._lock_fd: int | None = None
        self._mutex = threading.Lock()

    def append(self, text: str) -> None:
        with self._mutex:
            if self._preamble is not None:
                preamble, self._preamble = self._preamble, None
                text = preamble() + text
            data = text.encode("utf-8", errors="replace")
            try:
                lock = self._lock()
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    if not self._usable(len(data)):
                        self._prepare(len(data))
                    _write_whole(self._fd, data)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
            except OSError as exc:
                write_failed(self.path, exc)

    def write(self, message: str) -> None:
        """loguru's file-like sink interface: the message carries its record."""
        record = getattr(message, "record", None)
        self.append(entry_line(record) if record is not None else scrub(str(message)))

    def stop(self) -> None:
        with self._mutex:
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._lock_fd = self._id = None

    def after_fork(self, console=None) -> None:
        """In a forked child: open the files anew on its first write. A descriptor shared with the
        parent shares its flock too, which would then no longer keep the two apart."""
        self._mutex = threading.Lock()
        self._preamble = None
        self.stop()

    # ---

    def _lock(self) -> int:
        if self._lock_fd is None:
            self._lock_fd = _open_new(lock_path(self.path), os.O_RDWR)
        return self._lock_fd

    def _usable(self, size: int) -> bool:
        """The open file is still the one at `path` and has room for `size` more bytes."""
        if self._fd is None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._id and not self._full(st.st_size, size)

    def _full(self, current: int, size: int) -> bool:
        return current > 0 and current + size > self.max_bytes

    def _prepare(self, size: int) -> None:
        """Under the exclusive lock: reopen if another process rotated, rotate if still full."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != self._id:
            self._reopen()
            st = os.fstat(self._fd)
        if self._full(st.st_size, size):
            self._rotate()
            self._reopen()

    def _reopen(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._fd = _open_new(self.path, os.O_WRONLY | os.O_APPEND)
        st = os.fstat(self._fd)
        self._id = (st.st_dev, st.st_ino)

    def _rotate(self) -> None:
        if self.retention == 0:
            os.unlink(self.path)
            return
        for number in sorted(rotated_numbers(self.path), reverse=True):
            old = rotated_path(self.path, number)
            if number >= self.retention:
                old.unlink(missing_ok=True)
            else:
                os.replace(old, rotated_path(self.path, number + 1))
        os.replace(self.path, rotated_path(self.path, 1))


def _open_new(path: Path, flags: int) -> int:
    """Open `path`, creating it with FILE_MODE whatever the umask says."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return os.open(path, flags | os.O_CLOEXEC)
    os.fchmod(fd, FILE_MODE)
    return fd


def _write_whole(fd: int, data: bytes) -> None:
    """Append `data` whole or not at all; the caller holds the exclusive lock, so the end is where it starts."""
    start = os.fstat(fd).st_size
    view = memoryview(data)
    try:
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except OSError:
        try:
            os.ftruncate(fd, start)  # shrinking needs no space
        except OSError:
            pass
        raise


_write_failure_reported = False  # one warning per process, whatever the number of failed writes and files


def write_failed(path: Path, exc: OSError) -> None:
    """Say once, on stderr, that log entries are being lost: never loguru's traceback for every entry."""
    global _write_failure_reported
    if _write_failure_reported:
        return
    _write_failure_reported = True
    try:
        sys.stderr.write(f"tradeul-maint: warning: cannot write the log {path} ({exc.strerror or exc}); log entries "
                         "are being lost, the run goes on: free space in the log directory or set --log-dir\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


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

    global installed, _write_failure_reported
    # One warning per invocation (tests run many in one process). The processes a runner starts
    # (given its `directory`) write to the same files and say nothing: the runner says it once.
    _write_failure_reported = directory is not None
    logger.remove()
    logger.configure(patcher=_patch)
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
