"""`logs -f`: the entries written from now on, as they come, across rotations, until a signal ends it.

The reader keeps a cursor on the file it reads (logread.py opens the set of files and
reads them back); each poll reads the lines completed since, and when the file at the
log's path is another one (rotated), the rest of the old one and every file written after
it, then the new current file: no entry is skipped or read twice.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from tradeul_maint.observe.logread import POLL_SECONDS, Cursor, Entry, Query, close_files, open_files, parse_entry


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
    close_files([f for f in files if f not in newer])
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
    batch.extend(parse_entry(line) for line in data[:stop].split(b"\n") if line)
    return offset + stop
