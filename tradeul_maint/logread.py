"""Reading the maintenance log back: the last N entries across rotated files, filters, and follow.

The log is `maintenance.log` plus its rotated files `maintenance.log.1` (newest) to
`.N` (oldest), one JSON object a line (see logs.py). The last entries are found by
reading blocks backwards from the end of the newest file, so `logs -n 100` costs the
same on 5 MB as on 5 GB; a filter (`--task`, `--date`, `--level`) looks for its value's
JSON text in each block first and parses only the lines that contain it. The set of
files is opened under the writers' shared lock, so a rotation cannot rename files while
the reader lists them; once open, a file stays readable whatever is renamed.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from rich.text import Text

from tradeul_maint import safejson
from tradeul_maint.errors import UsageError
from tradeul_maint.logs import ERRORS_LOG, MAIN_LOG, fallback_log_dir, lock_path, log_dir_for, rotated_numbers, \
    rotated_path
from tradeul_maint.settings import Settings

BLOCK = 64 * 1024
LEVELS = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "SUCCESS": 25, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Entry:
    raw: str  # the line as written, without its newline
    data: dict | None  # None: the line is not a JSON object


@dataclass(frozen=True)
class Query:
    """Which entries to show; every filter given must match."""

    date: dt.date | None = None
    task: str | None = None
    level: str | None = None  # this level and above
    parsed_only: bool = False  # drop lines that are not JSON objects (for --json)
    jobs: tuple[str, ...] = ()  # these jobs' entries; an entry that names none is the top level's, `maintenance`

    @property
    def filtered(self) -> bool:
        return bool(self.date or self.task or self.level or self.jobs)

    def matches(self, entry: Entry) -> bool:
        d = entry.data
        if d is None:
            return not (self.filtered or self.parsed_only)
        if self.jobs and d.get("job", "maintenance") not in self.jobs:
            return False
        if self.task is not None and d.get("task") != self.task:
            return False
        if self.date is not None and d.get("date") != self.date.isoformat():
            return False
        if self.level is not None and LEVELS.get(str(d.get("level")).upper(), 0) < LEVELS[self.level]:
            return False
        return True

    def needles(self) -> list[bytes]:
        """Byte strings one of which a matching line must contain: its most selective filter's JSON value."""
        if self.task is not None:
            values = [self.task]
        elif self.date is not None:
            values = [self.date.isoformat()]
        elif self.jobs and "maintenance" not in self.jobs:
            values = list(self.jobs)
        elif self.level is not None:
            values = [name for name, number in LEVELS.items() if number >= LEVELS[self.level]]
        else:
            return []
        return [json.dumps(v, ensure_ascii=False).encode() for v in values]


def parse_level(text: str | None) -> str | None:
    if text is None:
        return None
    if text.upper() not in LEVELS:
        raise UsageError(f"--level {text!r}: expected one of {', '.join(LEVELS)}")
    return text.upper()


@dataclass(frozen=True)
class Located:
    path: Path  # the current file; rotated ones sit beside it
    notice: str | None = None  # said on stderr when the log is not where the settings point


def locate(settings: Settings, errors: bool = False) -> Located:
    """The configured log, or the fallback <state-dir>/logs when only that one has entries.

    Writers fall back when they cannot write the configured directory; a reader may be an
    operator who can read it but not write it, so the choice here depends on where the
    files are, not on permissions.
    """
    name = ERRORS_LOG if errors else MAIN_LOG
    preferred, fallback = log_dir_for(settings) / name, fallback_log_dir(settings) / name
    if _exists(preferred):
        return Located(preferred)
    if not _exists(fallback):
        return Located(preferred, f"no {name} yet in {preferred.parent} (nor in {fallback.parent})")
    return Located(fallback, f"reading {fallback}: the configured {preferred.parent} has no {name} "
                             "(writers fall back to the state directory when it is not writable)")


def _exists(path: Path) -> bool:
    return path.exists() or bool(rotated_numbers(path))


# --- the set of files ------------------------------------------------------------------


@dataclass
class LogFile:
    file: BinaryIO
    ident: tuple[int, int]  # (device, inode): what identifies it across renames
    current: bool  # the file at `path` itself, not a rotated one


def open_files(path: Path) -> list[LogFile]:
    """The rotated files and the current one, oldest first, opened under the writers' shared lock."""
    try:
        lock = os.open(lock_path(path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        lock = None  # nothing wrote here yet, or no permission to lock: list without it
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_SH)
        files = []
        for candidate in [rotated_path(path, n) for n in reversed(rotated_numbers(path))] + [path]:
            try:
                f = open(candidate, "rb")
            except FileNotFoundError:
                continue
            st = os.fstat(f.fileno())
            files.append(LogFile(f, (st.st_dev, st.st_ino), candidate == path))
        return files
    finally:
        if lock is not None:
            os.close(lock)


def _close(files: list[LogFile]) -> None:
    for f in files:
        f.file.close()


# --- the last N ----------------------------------------------------------------------


@dataclass
class Cursor:
    """Where `follow` goes on: the current file and the offset after its last complete line."""

    path: Path
    current: LogFile | None = None
    offset: int = 0
    seen: tuple[int, int] | None = None  # without a current file: the newest file already read


def last_entries(path: Path, query: Query, n: int, keep_open: bool = False) -> tuple[list[Entry], Cursor]:
    """The last `n` entries matching `query`, oldest first, and a cursor after them for `follow`.

    The cursor holds the current file open only with `keep_open` (then `follow` closes it).
    """
    files = open_files(path)
    current = files[-1] if files and files[-1].current else None
    cursor = Cursor(path, current, _complete_end(current.file) if current else 0,
                    files[-1].ident if files and not current else None)
    newest_first: list[Entry] = []
    for f in reversed(files):
        if len(newest_first) >= n:
            break
        end = cursor.offset if f is current else os.fstat(f.file.fileno()).st_size
        for line in _lines_backward(f.file, end, query.needles()):
            entry = _entry(line)
            if query.matches(entry):
                newest_first.append(entry)
                if len(newest_first) >= n:
                    break
    _close([f for f in files if f is not current or not keep_open])
    if not keep_open:
        cursor.current = None
    return newest_first[::-1], cursor


_TASK_FIELD = re.compile(rb'"task": ("(?:[^"\\\n]|\\.)*")')


def task_names(path: Path) -> list[str]:
    """Every task name the log's entries mention, sorted: what `logs --task` can be asked for.

    Called when a `--task` filter found nothing, so the blocks were all read already; the
    names are found in the raw bytes (at C speed), then decoded as the JSON strings they are.
    """
    names: set[str] = set()
    files = open_files(path)
    try:
        for f in files:
            f.file.seek(0)
            while block := f.file.read(BLOCK * 16):
                block += f.file.readline()  # whole lines: a field never straddles two blocks
                names.update(_TASK_FIELD.findall(block))
    finally:
        _close(files)
    decoded = set()
    for raw in names:
        try:
            decoded.add(safejson.loads(raw))
        except ValueError:
            continue
    return sorted(decoded)


def _complete_end(f: BinaryIO) -> int:
    """The offset just after the last newline: a line still being written is left for `follow`."""
    pos = os.fstat(f.fileno()).st_size
    while pos > 0:
        size = min(BLOCK, pos)
        pos -= size
        f.seek(pos)
        newline = f.read(size).rfind(b"\n")
        if newline >= 0:
            return pos + newline + 1
    return 0


def _lines_backward(f: BinaryIO, end: int, needles: list[bytes]) -> Iterator[bytes]:
    """The lines before `end`, last first, reading blocks backwards; with needles only lines holding one."""
    pos, carry = end, b""
    while pos > 0:
        size = min(BLOCK, pos)
        pos -= size
        f.seek(pos)
        block = f.read(size) + carry
        if pos > 0:
            cut = block.find(b"\n")
            if cut < 0:  # one line longer than a block: keep collecting it
                carry = block
                continue
            carry, block = block[:cut], block[cut + 1:]
        else:
            carry = b""
        yield from reversed(_lines(block, needles))


def _lines(region: bytes, needles: list[bytes]) -> list[bytes]:
    """The non-empty lines of `region` in order; with needles only those containing one (found at C speed)."""
    if not needles:
        return [line for line in region.split(b"\n") if line]
    starts: set[int] = set()
    for needle in needles:
        at = region.find(needle)
        while at >= 0:
            start = region.rfind(b"\n", 0, at) + 1
            starts.add(start)
            stop = region.find(b"\n", at)
            if stop < 0:
                break
            at = region.find(needle, stop)
    lines = []
    for start in sorted(starts):
        stop = region.find(b"\n", start)
        lines.append(region[start:stop if stop >= 0 else len(region)])
    return lines


def _entry(line: bytes) -> Entry:
    raw = line.decode("utf-8", errors="replace").rstrip("\r")
    try:
        data = safejson.loads(raw)
    except ValueError:
        data = None
    return Entry(raw, data if isinstance(data, dict) else None)


# --- follow --------------------------------------------------------------------------


class Stopped(Exception):
    """SIGTERM, SIGINT or SIGHUP came while following: the way `logs -f` ends."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While following, SIGTERM, SIGINT and SIGHUP raise Stopped in the main thread.

    A handler that raises interrupts the follow loop's sleep between polls at once (PEP 475
    retries a sleep only when the handler returns), so the reader ends as soon as it is
    told to, not at its next poll. Outside the main thread signals cannot be handled: no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)



def follow(cursor: Cursor, query: Query, poll: float = POLL_SECONDS) -> Iterator[list[Entry]]:
    """New entries as they are written, batch by batch, forever; survives rotations.

    When the file at `path` is no longer the one being read, the rest of the old one is
    read, then every file written after it (more than one when several rotations happened
    between two polls), then the new current file.
    """
    try:
        while True:
            batch: list[Entry] = []
            if cursor.current is None:
                _switch(cursor, cursor.seen, batch)
            else:
                cursor.offset = _read_new(cursor.current.file, cursor.offset, batch, whole=False)
                if _rotated(cursor):
                    _read_new(cursor.current.file, cursor.offset, batch, whole=True)
                    _switch(cursor, cursor.current.ident, batch)
            matching = [e for e in batch if query.matches(e)]
            if matching:
                yield matching
            else:
                time.sleep(poll)
    finally:
        if cursor.current is not None:
            cursor.current.file.close()


def _rotated(cursor: Cursor) -> bool:
    try:
        st = os.stat(cursor.path)
    except FileNotFoundError:
        return True
    return (st.st_dev, st.st_ino) != cursor.current.ident


def _switch(cursor: Cursor, previous: tuple[int, int] | None, batch: list[Entry]) -> None:
    """Read the files written after `previous` (all of them when it is gone) and go on with the newest."""
    files = open_files(cursor.path)
    idents = [f.ident for f in files]
    newer = files[idents.index(previous) + 1:] if previous in idents else files
    _close([f for f in files if f not in newer])
    if cursor.current is not None:
        cursor.current.file.close()
    cursor.current, cursor.offset = None, 0
    for f in newer:
        if f.current:
            cursor.current, cursor.offset = f, _read_new(f.file, 0, batch, whole=False)
        else:
            _read_new(f.file, 0, batch, whole=True)
            f.file.close()
            cursor.seen = f.ident


def _read_new(f: BinaryIO, offset: int, batch: list[Entry], whole: bool) -> int:
    """Append the complete lines after `offset` to `batch`; `whole` takes an unterminated last line too."""
    f.seek(offset)
    data = f.read()
    stop = len(data) if whole else data.rfind(b"\n") + 1
    batch.extend(_entry(line) for line in data[:stop].split(b"\n") if line)
    return offset + stop


# --- rendering -----------------------------------------------------------------------

LEVEL_STYLES = {"TRACE": "dim", "DEBUG": "blue", "INFO": "green", "SUCCESS": "green", "WARNING": "yellow",
                "ERROR": "bold red", "CRITICAL": "bold white on red"}
HEAD = ("time", "level", "event")


def render(entry: Entry) -> Text:
    """One entry for a person: time, level, event, `key=value` fields, multi-line fields indented below."""
    d = entry.data
    if d is None:
        return Text(entry.raw)
    level = str(d.get("level", ""))
    text = Text()
    text.append(str(d.get("time", "")), style="dim")
    text.append(f" {level:<7} ", style=LEVEL_STYLES.get(level, ""))
    text.append(str(d.get("event", "")), style="bold")
    blocks = []
    for key, value in d.items():
        if key in HEAD:
            continue
        if isinstance(value, str) and "\n" in value.strip():
            blocks.append((key, value))
            continue
        text.append(f" {key}=", style="dim")
        text.append(_scalar(value))
    for key, value in blocks:
        text.append(f"\n  {key}:", style="dim")
        for line in value.strip("\n").splitlines():
            text.append(f"\n    {line}")
    return text


def _scalar(value) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
