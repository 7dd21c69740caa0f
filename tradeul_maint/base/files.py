"""Files other processes read or write: the calendar cache, the metrics textfile, the password file."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes; OSError otherwise.

    Opened without blocking, so a FIFO with no writer cannot hang the caller, and checked
    before it is read, so /dev/zero or a huge file is refused rather than read forever.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data


def replace_file(path: Path, text: str) -> None:
    """Replace `path` atomically: a reader (another run, node_exporter) sees the old file or the new one, never
    half of one. The temporary name starts with a dot and ends in .tmp, so no reader takes it for the file, and
    the result is readable by other users (mkstemp makes it 0600): an image's cache and the textfile are read by
    another user."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
