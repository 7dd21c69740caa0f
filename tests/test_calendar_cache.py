"""A calendar cache built into an image: a pod starts every tick with an empty state directory.

`calendar --write-cache DIR` (run at image build) writes the cache, and
TRADEUL_MAINT_CALENDAR_CACHE=DIR makes every command read it before the state directory.
A tick that has to build the cache from exchange-calendars costs 0.8-0.9 s and 90 MB;
these tests prove the prebuilt one spares that, also for an image months old, and that
the tool falls back to building it when the prebuilt one cannot be trusted.
"""

from __future__ import annotations

import datetime as dt
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tradeul_maint.plan.calendar_cache import _pack, library_version, unpack

NOON = "2026-11-30T12:00"  # before the window, no catch-up: a tick with nothing to do
HEAVY = ("pandas", "numpy", "exchange_calendars")


def imported(result: subprocess.CompletedProcess) -> set[str]:
    return {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()
            if line.startswith("import time:")}


def tick(project, cache_dir: Path | None, state_dir: Path) -> subprocess.CompletedProcess:
    env = project.env(TRADEUL_MAINT_STATE_DIR=str(state_dir))
    if cache_dir is not None:
        env["TRADEUL_MAINT_CALENDAR_CACHE"] = str(cache_dir)
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "tradeul_maint", "-q", "run", "--now", NOON],
                          env=env, cwd=project.root, capture_output=True, text=True, timeout=120)


@pytest.fixture
def prebuilt(project, tmp_path) -> Path:
    project.write_config('[schedule]\nauto_recover = false\n[[tasks]]\nname = "a"\ncommand = ["true"]\n')
    result = project.run("calendar", "--write-cache", str(tmp_path / "image-cache"))
    assert result.returncode == 0, result.stderr
    path = tmp_path / "image-cache" / f"calendar-XNYS-{library_version()}.json"
    assert result.stdout == f"wrote {path}\n"
    return path


def rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_tick_with_an_empty_state_dir_reads_the_prebuilt_cache_and_imports_no_pandas(project, prebuilt, tmp_path):
    assert stat.S_IMODE(prebuilt.stat().st_mode) == 0o644  # the image's user is not the builder
    state = tmp_path / "empty-state"
    result = tick(project, prebuilt.parent, state)
    assert (result.returncode, result.stdout) == (0, "")
    assert not imported(result) & set(HEAVY), sorted(imported(result) & set(HEAVY))
    assert not list(state.rglob("calendar-*.json"))  # nothing rebuilt in the state directory


def test_without_the_prebuilt_cache_the_same_tick_builds_it(project, prebuilt, tmp_path):
    """The control for the test above: the empty state directory alone costs the build."""
    state = tmp_path / "empty-state"
    result = tick(project, None, state)
    assert result.returncode == 0
    assert "exchange_calendars" in imported(result)
    assert list(state.rglob("calendar-*.json"))


def test_a_month_old_prebuilt_cache_is_still_used(project, prebuilt, tmp_path):
    """The state directory's cache is rebuilt weekly; an image's cannot be and need not be."""
    old = (dt.date.today() - dt.timedelta(days=40)).isoformat()
    rewrite(prebuilt, lambda data: data.update(built_on=old))
    result = tick(project, prebuilt.parent, tmp_path / "empty-state")
    assert result.returncode == 0
    assert not imported(result) & set(HEAVY)


def _ends_soon(data: dict) -> None:
    """Cut the schedule 10 days after today: less than expiry_warning_days (30) ahead."""
    days, opens, closes = unpack(data["sessions"])
    limit = (dt.date.today() + dt.timedelta(days=10)).toordinal()
    keep = sum(day <= limit for day in days)
    data["sessions"] = _pack(days[:keep], opens[:keep], closes[:keep])


def _format_3(data: dict) -> None:
    """A cache written before the holidays' names were kept."""
    data["format"] = 3
    del data["names"]


@pytest.mark.parametrize("damage", ["ends_soon", "other_version", "corrupt", "format_3"])
def test_a_prebuilt_cache_that_cannot_be_trusted_is_rebuilt_in_the_state_dir(project, prebuilt, tmp_path, damage):
    if damage == "format_3":
        rewrite(prebuilt, _format_3)
    elif damage == "ends_soon":
        rewrite(prebuilt, _ends_soon)  # a fresh build reaches a year ahead: no reason to warn
    elif damage == "other_version":
        prebuilt.rename(prebuilt.with_name("calendar-XNYS-0.0.1.json"))  # the image's library was upgraded
    else:
        prebuilt.write_text("{")
    state = tmp_path / "empty-state"
    result = tick(project, prebuilt.parent, state)
    assert (result.returncode, result.stdout) == (0, "")
    assert "exchange_calendars" in imported(result)
    rebuilt = list(state.rglob("calendar-*.json"))
    assert len(rebuilt) == 1 and json.loads(rebuilt[0].read_text())["built_on"] == dt.date.today().isoformat()


def test_holidays_are_named_from_the_cache_without_loading_the_library(project, prebuilt, tmp_path):
    """exchange-calendars names its holidays and early closes; the cache keeps the names, so saying that a date is
    not a session, and why, costs no pandas."""
    env = project.env(TRADEUL_MAINT_STATE_DIR=str(tmp_path / "empty-state"),
                      TRADEUL_MAINT_CALENDAR_CACHE=str(prebuilt.parent))
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "tradeul_maint", "run", "--date",
                             "2026-12-25", "--now", "2027-01-05T10:00"], env=env, cwd=project.root,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "tradeul-maint: 2026-12-25 is not a trading session of XNYS (Christmas); the next session is 2026-12-28 " \
           "(Monday)" in result.stderr
    assert not imported(result) & set(HEAVY)
    names = json.loads(prebuilt.read_text())["names"]
    assert len(names["days"]) == len(names["names"]) > 100 and "Christmas Eve" in names["names"]


def test_write_cache_to_an_unwritable_place_is_one_line_and_exit_2(project, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    project.write_config('[[tasks]]\nname = "a"\ncommand = ["true"]\n')
    result = project.run("calendar", "--write-cache", str(blocker / "cache"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"tradeul-maint: --write-cache {blocker / 'cache'}: cannot write")
    assert len(result.stderr.splitlines()) == 1

