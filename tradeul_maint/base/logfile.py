"""The log files: `maintenance.log` and `maintenance_errors.log`, one JSON object a line, shared by many processes.

Every entry is one event: the message is the event name (`task_completed`), the fields
are bound with `logger.bind(...)`, and the line is one JSON object (what `logs`,
`logs --json` and `jq` read), every string in it scrubbed.

Overlapping cron runs write to the same files, so the file sink is ours rather than
loguru's (whose rotation assumes one process): each entry is a single O_APPEND write
under a shared flock, and rotation happens under the exclusive flock, after re-checking
the file, so no entry is lost or lands in a file that is being renamed. Which directory,
which level, and the console are the settings' (config/logs.py).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

from tradeul_maint.base.redact import scrub, scrub_value

MAIN_LOG = "maintenance.log"
ERRORS_LOG = "maintenance_errors.log"
FILE_MODE = 0o640  # owner and group (the operators' group) only: entries carry task output
TRACEBACK_LIMIT = 16384
UTC = dt.timezone.utc


def _json(entry: dict[str, Any]) -> str:
    """One JSON line; every string in it scrubbed, values json cannot hold (stringified) included.

    The strings are scrubbed before they are encoded, never the encoded line: in JSON a
    newline is the two characters `\\n`, which would run one `NAME=value` into the next.
    """
    return _encoded(scrub_value(entry))


def _encoded(entry: dict[str, Any]) -> str:
    return json.dumps(entry, default=lambda value: scrub(str(value)), ensure_ascii=False) + "\n"


_SCRUBBED = "tradeul_maint_scrubbed"  # set on a record by patch_record


def patch_record(record) -> None:
    record["message"] = scrub(record["message"])
    for key, value in record["extra"].items():
        record["extra"][key] = scrub_value(value, key)
    record[_SCRUBBED] = True


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
        entry["exception"] = scrub(f"{exc.type.__name__}: {exc.value}" if exc.type else str(exc.value))
        text = scrub("".join(traceback.format_exception(exc.type, exc.value, exc.traceback)))  # whole secrets, then the cut
        entry["traceback"] = text if len(text) <= TRACEBACK_LIMIT else "..." + text[-TRACEBACK_LIMIT:]
    # Its message and fields were scrubbed once, as the record was made (patch_record), not again here (a
    # run's log lines are on the path between one task and the next), unless a task's code replaced the patcher.
    return _encoded(entry) if record.get(_SCRUBBED) else _json(entry)


def notice_line(event: str, level: str = "WARNING", **fields: Any) -> str:
    entry = {"time": dt.datetime.now(UTC).isoformat(timespec="milliseconds"), "level": level, "event": event,
             **fields}
    return _json(entry)


# --- the multi-process file ---------------------------------------------------------


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


def warn_on_write_failure(warn: bool) -> None:
    """Whether the next failed write says so (a new invocation: yes; a process its runner started: no)."""
    global _write_failure_reported
    _write_failure_reported = not warn


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
