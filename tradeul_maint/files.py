"""Files other processes read while this one writes them: the calendar cache, the metrics textfile."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
