"""Logs on a full disk: an entry is written whole or not at all, one warning per run, and the run goes on."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import marker_tasks
from tradeul_maint.config import logs
from tradeul_maint.base.logfile import ERRORS_LOG, MAIN_LOG, RotatingFile

TASKS = ["a", "b", "c", "d"]


def parsed_lines(path: Path) -> list[dict]:
    """Every line of the file as JSON: a torn or glued line fails here."""
    text = path.read_text() if path.exists() else ""
    assert text == "" or text.endswith("\n"), f"{path.name} ends in the middle of a line"
    return [json.loads(line) for line in text.splitlines()]


class DiskFills:
    """os.write that, once `full` is set, writes part of what it is given to the log files, then fails with ENOSPC."""

    def __init__(self, monkeypatch, directory: Path):
        self.directory = str(directory)
        self.full = False
        self.failures = 0
        self._write = os.write
        monkeypatch.setattr(os, "write", self)

    def __call__(self, fd, data):
        if self.full and self._is_log(fd):
            self.failures += 1
            if len(data) > 1 and self.failures % 2:  # every other call: half of it lands, as at a full disk
                return self._write(fd, bytes(data[:len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._write(fd, data)

    def _is_log(self, fd) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(self.directory)
        except OSError:
            return False


def test_a_failed_write_leaves_no_torn_line_and_warns_once(tmp_path, monkeypatch, capsys):
    disk = DiskFills(monkeypatch, tmp_path)
    sink = RotatingFile(tmp_path / MAIN_LOG, 1 << 20, 3)
    logs.configure_logging(None)  # a new invocation: its first failure warns
    line = lambda n: json.dumps({"event": "tick", "seq": n, "pad": "x" * 300}) + "\n"  # noqa: E731
    try:
        sink.append(line(1))
        disk.full = True
        for n in range(2, 6):
            sink.append(line(n))
        assert disk.failures >= 4  # the writes really failed, some of them part way
        assert [e["seq"] for e in parsed_lines(tmp_path / MAIN_LOG)] == [1]
        disk.full = False
        sink.append(line(6))
        assert [e["seq"] for e in parsed_lines(tmp_path / MAIN_LOG)] == [1, 6]
    finally:
        sink.stop()
        logs.configure_logging(None)
        from loguru import logger
        logger.remove()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the log" in err[0] and "No space left on device" in err[0]


def test_a_run_whose_log_writes_fail_completes_with_one_warning_line(project, r, monkeypatch):
    project.write_config(marker_tasks(project.root, TASKS, fail=()))
    disk = DiskFills(monkeypatch, project.log_dir)
    disk.full = True
    result = project.cli("run", "--date", "2026-11-25")
    assert result.exit_code == 0, result.output
    assert disk.failures > 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write the log" in lines[0], result.stderr
    assert "Logging error" not in result.stderr
    assert json.loads(r.get("maintenance:status:2026-11-25"))["all_success"] is True
    for name in (MAIN_LOG, ERRORS_LOG):
        parsed_lines(project.log_dir / name)


# --- a real full filesystem ---------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KB tmpfs at tmp_path/logs (needs root, or the test is skipped); unmounted after."""
    mountpoint = tmp_path / "logs"
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    yield mountpoint
    if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no room left."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (4096, 512, 64, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def pad_to_leave(path: Path, room: int) -> None:
    """Append one whole entry so that `room` bytes are left in the file's last 4 KB page."""
    size = path.stat().st_size
    line = json.dumps({"event": "padding", "pad": ""}) + "\n"
    pad = (-size - room) % 4096 - len(line)
    pad += 4096 if pad < 0 else 0
    with open(path, "a") as f:
        f.write(json.dumps({"event": "padding", "pad": "x" * pad}) + "\n")
    assert (-path.stat().st_size) % 4096 == room


def test_on_a_full_tmpfs_a_run_goes_on_with_one_warning_and_no_torn_line(project, r, small_tmpfs):
    assert small_tmpfs == project.log_dir
    project.write_config(marker_tasks(project.root, TASKS, fail=("d",)))
    first = project.run("run", "--date", "2026-11-23")
    assert first.returncode == 1 and "cannot write the log" not in first.stderr
    pad_to_leave(project.log_dir / MAIN_LOG, 300)  # room for one entry and part of the next in its last page
    before = (project.log_dir / MAIN_LOG).stat().st_size
    filler = fill(small_tmpfs)

    full = project.run("run", "--date", "2026-11-24")
    assert full.returncode == 1, full.stderr  # d fails, as it does on any disk
    warnings = [line for line in full.stderr.splitlines() if "cannot write the log" in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    assert len(full.stderr.strip().splitlines()) <= 3, full.stderr  # the summary, d's error, the warning
    assert "Logging error" not in full.stderr and "Traceback" not in full.stderr
    doc = json.loads(r.get("maintenance:status:2026-11-24"))
    assert doc["tasks"] == {"a": "completed", "b": "completed", "c": "completed", "d": "failed"}
    after = (project.log_dir / MAIN_LOG).stat().st_size
    assert before < after <= before + 300  # entries filled the last page, then writes failed
    for name in (MAIN_LOG, ERRORS_LOG):
        parsed_lines(project.log_dir / name)

    filler.unlink()
    again = project.run("run", "--date", "2026-11-25")
    assert again.returncode == 1 and "cannot write the log" not in again.stderr
    logged = parsed_lines(project.log_dir / MAIN_LOG)
    assert {e.get("date") for e in logged} >= {"2026-11-23", "2026-11-25"}
    assert [e["event"] for e in logged if e.get("date") == "2026-11-25"][-1] == "maintenance_cycle_finished"
