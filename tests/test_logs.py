"""Persistent logs: what a run writes, rotation shared by several processes, secrets kept out, and `logs`."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from loguru import logger

from conftest import marker_tasks
from tradeul_maint.base.redact import scrub
from tradeul_maint.base.logfile import ERRORS_LOG, MAIN_LOG, RotatingFile
from tradeul_maint.config.logs import configure_logging
from tradeul_maint.config.load import load_settings
from tradeul_maint.config.settings import Overrides
from tradeul_maint.observe import logfollow, logread

DAY = "2026-11-25"  # a Wednesday; window 17:00-17:30 New York
QUIET = "[schedule]\nauto_recover = false\n"
UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


def entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def all_log_text(directory: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in directory.rglob("*") if p.is_file())


@pytest.fixture
def configured(tmp_path):
    """configure_logging in this process, with a config of our own; the sinks are removed afterwards."""

    def configure(log_dir: Path, rotation: str = "10 MB", retention: int = 5, level: str = "DEBUG"):
        config = tmp_path / "logging.toml"
        config.write_text(f'[logging]\nrotation = "{rotation}"\nretention = {retention}\nlevel = "{level}"\n')
        settings = load_settings(Overrides(config=config, state_dir=tmp_path / "state", log_dir=log_dir), env={},
                                 require_tasks=False)
        return configure_logging(settings, quiet=True)

    yield configure
    logger.remove()


def seq_lines(path: Path, count: int, start: int = 0, size: int = 100_000, retention: int = 1000, **fields):
    """`count` entries with a `seq` number through the real multi-process sink (rotating at `size`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = RotatingFile(path, size, retention)
    try:
        for i in range(start, start + count):
            entry = {"time": "2026-11-25T22:00:00.000+00:00", "level": "INFO", "event": "tick", **fields, "seq": i}
            sink.append(json.dumps(entry) + "\n")
    finally:
        sink.stop()


def shown_seqs(output: str) -> list[int]:
    return [json.loads(line)["seq"] for line in output.splitlines() if line.strip()]


# --- what a run writes -----------------------------------------------------------------


def test_a_run_logs_every_event_with_time_level_date_task_and_run_id(project):
    project.write_config(marker_tasks(project.root, ["a", "b"], fail=("b",)))
    assert project.cli("run", "--date", DAY).exit_code == 1
    logged = entries(project.log_dir / MAIN_LOG)
    events = [(e["event"], e.get("task")) for e in logged]
    assert events == [("starting_maintenance_cycle", None), ("task_starting", "a"), ("task_completed", "a"),
                      ("task_starting", "b"), ("task_failed", "b"), ("maintenance_cycle_finished", None)]
    run_ids = {e["run_id"] for e in logged}
    assert len(run_ids) == 1 and all(e["date"] == DAY for e in logged)
    assert all(UTC_TIME.match(e["time"]) for e in logged)
    assert list(logged[1])[:6] == ["time", "level", "event", "date", "task", "run_id"]
    assert [e["level"] for e in logged if e["event"] == "task_failed"] == ["ERROR"]


def test_log_files_are_readable_by_owner_and_group_only(project):
    project.write_config(marker_tasks(project.root, ["a"], fail=("a",)))
    project.cli("run", "--date", DAY)
    for name in (MAIN_LOG, ERRORS_LOG):
        assert stat.S_IMODE((project.log_dir / name).stat().st_mode) == 0o640


def test_errors_file_holds_only_errors(project):
    project.write_config(marker_tasks(project.root, ["a", "b"], deps={"b": ["a"]}, fail=("a",)))
    project.cli("run", "--date", DAY)
    errors = entries(project.log_dir / ERRORS_LOG)
    assert [e["event"] for e in errors] == ["task_failed", "task_skipped", "maintenance_cycle_finished"]
    assert {e["level"] for e in errors} == {"ERROR"}
    assert len(entries(project.log_dir / MAIN_LOG)) > len(errors)


def test_a_failed_commands_last_output_goes_into_its_error_entry(project):
    script = "import sys\nfor i in range(20000): print(f'line {i}')\nsys.exit(4)\n"
    (project.root / "noisy.py").write_text(script)
    project.write_config(f"""
        [[tasks]]
        name = "noisy"
        command = ['{sys.executable}', '{project.root / "noisy.py"}']
    """)
    assert project.cli("run", "--date", DAY).exit_code == 1
    [failed] = [e for e in entries(project.log_dir / ERRORS_LOG) if e["event"] == "task_failed"]
    assert failed["task"] == "noisy" and "exit code 4" in failed["error"]
    assert failed["output"].endswith("line 19999\n") and "line 0\n" not in failed["output"]
    assert len(failed["output"]) <= 16384 + 3


# --- secrets ----------------------------------------------------------------------------

LEAKY_TASK = '''
from loguru import logger

def run(ctx):
    password = "secret-local"  # what loguru's diagnose mode would print beside the traceback
    ctx.logger.bind(url="redis://admin:secret-field@db:6379/0", settings={"password": "secret-nested"}) \\
        .warning("connecting")
    try:
        raise ConnectionError(f"cannot reach redis://admin:secret-url@db:6379/0 (password={password})")
    except ConnectionError:
        ctx.logger.opt(exception=True).error("connect_failed")
        raise
'''


def test_no_password_reaches_any_log_file_not_even_through_a_traceback(project):
    (project.root / "leaky.py").write_text(LEAKY_TASK)
    project.write_config('[[tasks]]\nname = "leaky"\npython = "leaky:run"\n')
    assert project.cli("-v", "run", "--date", DAY).exit_code == 1
    text = all_log_text(project.log_dir)
    assert "secret" not in text
    logged = {e["event"]: e for e in entries(project.log_dir / MAIN_LOG)}
    assert logged["connecting"]["url"] == "redis://admin:***@db:6379/0"
    assert "ConnectionError" in logged["connect_failed"]["traceback"]
    assert "redis://admin:***@db" in logged["task_failed"]["error"]


@pytest.mark.parametrize("text, shown", [
    ("redis://user:hunter2@host:6379/0", "redis://user:***@host:6379/0"),
    ("rediss://:hunter2@host:6380", "rediss://:***@host:6380"),
    ("redis://u:hun@ter2@host/0", "redis://***@host/0"),
    ("redis+sentinel://:hunter2@s1:26379,s2:26379/main", "redis+sentinel://:***@s1:26379,s2:26379/main"),
    ("connect(password=hunter2, db=0)", "connect(password=***, db=0)"),
    ('{"password": "hunter2"}', '{"password": "***"}'),
    ("requirepass hunter2", "requirepass ***"),
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
])
def test_scrub_hides_passwords_and_leaves_the_rest(text, shown):
    assert scrub(text) == shown


# --- rotation and several writers ------------------------------------------------------


@pytest.mark.parametrize("retention", [0, 1, 3])
def test_rotation_keeps_exactly_retention_old_files(tmp_path, retention):
    path = tmp_path / MAIN_LOG
    seq_lines(path, 300, size=2048, retention=retention)
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert names == sorted([MAIN_LOG] + [f"{MAIN_LOG}.{n}" for n in range(1, retention + 1)])
    assert all(p.stat().st_size <= 2048 for p in tmp_path.iterdir())
    kept = [line for n in range(retention, 0, -1) for line in (tmp_path / f"{MAIN_LOG}.{n}").read_text().splitlines()]
    kept += path.read_text().splitlines()
    assert shown_seqs("\n".join(kept)) == list(range(300 - len(kept), 300))  # the newest, in order, no gap


def test_rotation_removes_old_files_beyond_a_lowered_retention(tmp_path):
    path = tmp_path / MAIN_LOG
    seq_lines(path, 300, size=2048, retention=6)
    seq_lines(path, 30, start=300, size=2048, retention=2)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == \
        [MAIN_LOG, f"{MAIN_LOG}.1", f"{MAIN_LOG}.2"]


WRITER = """
import os, sys, time
from pathlib import Path
from loguru import logger
from tradeul_maint.config.logs import configure_logging
from tradeul_maint.config.load import load_settings
from tradeul_maint.config.settings import Overrides

config, log_dir, writer, count, go = sys.argv[1:]
settings = load_settings(Overrides(config=Path(config), state_dir=Path(log_dir) / "state", log_dir=Path(log_dir)),
                         env={}, require_tasks=False)
configure_logging(settings, quiet=True)
while not os.path.exists(go):
    time.sleep(0.001)
for i in range(int(count)):
    logger.bind(task=writer, seq=i).log("ERROR" if i % 10 == 0 else "INFO", "tick")
"""


@pytest.mark.slow
def test_concurrent_writers_lose_no_entry_across_many_rotations(tmp_path):
    writers, count = 4, 4000
    config = tmp_path / "logging.toml"
    config.write_text('[logging]\nrotation = "16 KB"\nretention = 1000\n')
    log_dir, go = tmp_path / "logs", tmp_path / "go"
    (tmp_path / "writer.py").write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(config), str(log_dir), f"w{n}",
                               str(count), str(go)], stderr=subprocess.PIPE, text=True) for n in range(writers)]
    time.sleep(0.3)  # let them all import and configure, so the writes overlap
    go.touch()
    stderr = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * writers, stderr
    assert not any("Traceback" in e or "error in Loguru" in e for e in stderr), stderr
    for name, expected in ((MAIN_LOG, count), (ERRORS_LOG, count // 10)):
        files = [p for p in log_dir.iterdir() if p.name == name or p.name.startswith(name + ".")
                 and p.name[len(name) + 1:].isdigit()]
        lines = [line for p in files for line in p.read_text().splitlines()]
        seen = [(e["task"], e["seq"]) for e in map(json.loads, lines)]  # a torn line would not parse
        assert len(seen) == len(set(seen)) == writers * expected
        if name == MAIN_LOG:
            assert len(files) > 50  # the limit really forced many rotations


# --- logs: reading -----------------------------------------------------------------------


@pytest.fixture
def reader(project):
    """A project with an empty config (every default): `logs` needs no tasks."""
    project.write_config("")
    return project


def test_logs_prints_the_last_n_entries_oldest_first_across_rotated_files(reader):
    project = reader
    seq_lines(project.log_dir / MAIN_LOG, 200, size=2048)
    assert len(list(project.log_dir.glob(MAIN_LOG + ".*"))) > 5
    result = project.cli("logs", "-n", "30", "--json")
    assert result.exit_code == 0, result.output
    assert shown_seqs(result.stdout) == list(range(170, 200))
    assert shown_seqs(project.cli("logs", "-n", "500", "--json").stdout) == list(range(200))
    default = project.cli("logs").stdout.splitlines()
    assert len(default) == 50 and default[-1].endswith("tick seq=199")


def test_logs_json_prints_the_lines_as_written(reader):
    project = reader
    seq_lines(project.log_dir / MAIN_LOG, 5, task="a")
    result = project.cli("logs", "--json")
    assert result.stdout == (project.log_dir / MAIN_LOG).read_text()


def test_logs_plain_output_shows_time_level_event_fields_and_multiline_output(reader, configured):
    project = reader
    configured(project.log_dir)
    logger.bind(date=DAY, task="load", run_id="r1", error="exit code 3", output="first\nsecond\n").error("task_failed")
    out = project.cli("logs").stdout.splitlines()
    assert re.match(r"^\S+\+00:00 ERROR   task_failed date=2026-11-25 task=load run_id=r1 "
                    r'error="exit code 3"$', out[0])
    assert out[1:] == ["  output:", "    first", "    second"]


def test_logs_filters_by_task_date_and_level(reader, configured):
    project = reader
    configured(project.log_dir, rotation="2 KB", retention=50)
    for i in range(60):
        level = ("DEBUG", "INFO", "WARNING", "ERROR")[i % 4]
        logger.bind(date=f"2026-11-{20 + i % 3}", task=f"t{i % 5}", seq=i).log(level, "tick")

    def seqs(*args: str) -> list[int]:
        result = project.cli("logs", "--json", "-n", "1000", *args)
        assert result.exit_code == 0, result.output
        return shown_seqs(result.stdout)

    assert seqs("--task", "t2") == [i for i in range(60) if i % 5 == 2]
    assert seqs("--date", "2026-11-21") == [i for i in range(60) if i % 3 == 1]
    assert seqs("--level", "warning") == [i for i in range(60) if i % 4 >= 2]
    assert seqs("--task", "t1", "--date", "2026-11-22", "--level", "INFO") == \
        [i for i in range(60) if i % 5 == 1 and i % 3 == 2 and i % 4 >= 1]
    assert seqs("--task", "t3", "-n", "2") == [53, 58]
    assert seqs("--errors") == [i for i in range(60) if i % 4 == 3]
    assert seqs("--task", "nope") == []


def test_logs_task_without_entries_says_so_and_lists_the_tasks_it_has_seen(reader, configured):
    project = reader
    configured(project.log_dir, rotation="2 KB", retention=50)
    logger.bind(date=DAY, task="oldest", seq=-1).info("tick")
    for i in range(40):
        logger.bind(date=DAY, task=("load_ohlc", "calc \"atr\"", "snapshot")[i % 3], seq=i).info("tick")
    logger.bind(date=DAY, seq=99).info("no_task_here")
    oldest = project.log_dir / f"{MAIN_LOG}.{max(logread.rotated_numbers(project.log_dir / MAIN_LOG))}"
    assert '"oldest"' in oldest.read_text()  # found only in the oldest rotated file
    result = project.cli("logs", "--task", "load-ohlc")
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr.strip() == (
        f"tradeul-maint: no entries for task 'load-ohlc' in {project.log_dir / MAIN_LOG} (or its rotated files); "
        "tasks seen there: calc \"atr\", load_ohlc, oldest, snapshot")
    narrowed = project.cli("logs", "--task", "snapshot", "--date", "2026-11-24")  # the task has entries: no notice
    assert (narrowed.exit_code, narrowed.stdout, narrowed.stderr) == (0, "", "")
    found = project.cli("logs", "--task", "snapshot", "-n", "1")
    assert found.stderr == "" and "task=snapshot" in found.stdout


@pytest.mark.parametrize("args, message", [
    (["--level", "LOUD"], "--level 'LOUD'"),
    (["--date", "25/11/2026"], "--date '25/11/2026'"),
    (["-n", "-1"], "-n"),
])
def test_logs_rejects_bad_filters_as_usage_errors(reader, args, message):
    project = reader
    result = project.cli("logs", *args)
    assert result.exit_code == 2 and message in result.stderr


def test_logs_works_without_a_config_file(project):
    seq_lines(project.log_dir / MAIN_LOG, 3)
    assert not project.config.exists()
    result = project.cli("logs", "--json", TRADEUL_MAINT_CONFIG="")
    assert result.exit_code == 0, result.output
    assert shown_seqs(result.stdout) == [0, 1, 2]


def test_logs_says_so_on_stderr_when_there_is_no_log_yet(reader):
    result = reader.cli("logs")
    assert (result.exit_code, result.stdout) == (0, "")
    assert f"no {MAIN_LOG} yet in {reader.log_dir}" in result.stderr


def test_logs_reads_the_last_entries_from_the_end_not_the_whole_file(reader, monkeypatch):
    project = reader
    line = json.dumps({"time": "2026-11-25T22:00:00.000+00:00", "level": "INFO", "event": "tick", "seq": 0}) + "\n"
    (project.log_dir).mkdir()
    (project.log_dir / MAIN_LOG).write_text(line * 50_000)  # ~4 MB
    read = []

    class Counting:
        def __init__(self, f):
            self.f = f

        def read(self, size=-1):
            data = self.f.read(size)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.f, name)

    real_open = open
    monkeypatch.setattr(logread, "open", lambda *a, **k: Counting(real_open(*a, **k)), raising=False)
    assert len(project.cli("logs", "-n", "100").stdout.splitlines()) == 100
    assert sum(read) <= 3 * logread.BLOCK


# --- logs --follow --------------------------------------------------------------------


@contextmanager
def following(project, *args: str) -> Iterator[queue.Queue]:
    """`logs -f ...` in a subprocess; its output lines arrive in the queue; killed at the end."""
    proc = project.spawn("logs", "-f", *args)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        proc.kill()
        proc.wait(10)
        reader.join(10)
        proc.stdout.close()
        proc.stderr.close()


def _collect(lines: queue.Queue, want: int, timeout: float) -> list[str]:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        try:
            got.append(lines.get(timeout=0.1))
        except queue.Empty:
            pass
    return got


def test_logs_follow_keeps_printing_new_entries_across_rotations(reader):
    project = reader
    path = project.log_dir / MAIN_LOG
    seq_lines(path, 1, size=2048, retention=100)
    with following(project, "-n", "1", "--json") as lines:
        assert shown_seqs("".join(_collect(lines, 1, 15))) == [0]  # following now
        seq_lines(path, 300, start=1, size=2048, retention=100)  # ~16 rotations, several between two polls
        time.sleep(0.3)
        seq_lines(path, 50, start=301, size=2048, retention=100, task="after")
        got = _collect(lines, 350, 10)
        assert shown_seqs("".join(got)) == list(range(1, 351))
        assert len(list(project.log_dir.glob(MAIN_LOG + ".*"))) > 10


def test_logs_follow_applies_filters_and_waits_for_a_log_that_does_not_exist_yet(reader):
    project = reader
    path = project.log_dir / MAIN_LOG
    with following(project, "--task", "b", "--json") as lines:
        time.sleep(1.0)  # the follower starts on an empty directory
        for i in range(10):
            seq_lines(path, 1, start=i, task="ab"[i % 2])
        assert shown_seqs("".join(_collect(lines, 5, 15))) == [1, 3, 5, 7, 9]


def test_a_signal_wakes_the_follow_loop_at_once(tmp_path):
    """The loop polls for new entries between sleeps; a signal ends the sleep it comes in, whatever the poll."""
    path = tmp_path / MAIN_LOG
    seq_lines(path, 1)
    _, cursor = logread.last_entries(path, logread.Query(), 1, keep_open=True)
    previous = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    started = time.monotonic()
    with pytest.raises(logfollow.Stopped) as stopped:
        with logfollow.stop_on_signals():
            timer.start()
            for _ in logfollow.follow(cursor, logread.Query(), poll=60):
                pass
    timer.join()
    assert stopped.value.signum == signal.SIGTERM
    assert time.monotonic() - started < 30  # a poll is 60 s here: only the signal can have ended the wait
    assert signal.getsignal(signal.SIGTERM) is previous  # the handlers are the command's while it follows only
    assert cursor.current is None or cursor.current.file.closed


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 0), (signal.SIGHUP, 129)])
def test_logs_follow_ends_on_a_signal_with_what_it_printed(reader, sig, code):
    """Ctrl-C is the way to end --follow (0); SIGTERM and SIGHUP say they stopped it, as every command does."""
    project = reader
    path = project.log_dir / MAIN_LOG
    seq_lines(path, 3)
    proc = project.spawn("logs", "-f", "-n", "1", "--json")
    try:
        shown = [proc.stdout.readline()]  # the last entry
        seq_lines(path, 1, start=3)
        shown.append(proc.stdout.readline())  # following now
        proc.send_signal(sig)
        assert proc.wait(10) == code
        out, err = proc.communicate()
        assert (shown_seqs("".join(shown)), out, err) == ([2, 3], "", "")
    finally:
        proc.kill()
        proc.wait(10)


# --- the fallback directory -------------------------------------------------------------


def _unwritable_log_dir(project) -> dict[str, str]:
    """A log dir below a regular file: not creatable, even for root."""
    (project.root / "blocker").write_text("")
    return {"TRADEUL_MAINT_LOG_DIR": str(project.root / "blocker" / "logs")}


def test_a_silent_cron_tick_stays_silent_when_the_log_dir_falls_back(project):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    result = project.run("run", "--now", "2026-11-25T12:00", **_unwritable_log_dir(project))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    fallback = project.state_dir / "logs" / MAIN_LOG
    assert not fallback.exists() or fallback.read_text() == ""


def test_a_run_logs_to_the_state_dir_with_a_notice_when_the_log_dir_is_not_writable(project):
    env = _unwritable_log_dir(project)
    project.write_config(marker_tasks(project.root, ["a"]))
    assert project.cli("run", "--date", DAY, **env).exit_code == 0
    logged = entries(project.state_dir / "logs" / MAIN_LOG)
    assert logged[0]["event"] == "log_dir_fallback" and logged[0]["level"] == "WARNING"
    assert logged[0]["preferred"] == env["TRADEUL_MAINT_LOG_DIR"]
    assert logged[0]["using"] == str(project.state_dir / "logs")
    assert [e["event"] for e in logged].count("log_dir_fallback") == 1
    assert "task_completed" in [e["event"] for e in logged]
    shown = project.cli("logs", "--task", "a", **env)
    assert shown.exit_code == 0 and "task_completed" in shown.stdout
    assert f"reading {project.state_dir / 'logs' / MAIN_LOG}" in shown.stderr


def test_verbose_puts_the_fallback_notice_on_the_console(project):
    env = _unwritable_log_dir(project)
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.cli("-v", "run", "--date", DAY, **env)
    assert result.stderr.splitlines()[0].startswith("WARNING log_dir_fallback:")
    assert result.stderr.count("log_dir_fallback") == 1


def test_a_thread_that_raises_prints_one_scrubbed_line_and_no_traceback(capsys):
    import threading

    configure_logging(None)

    def fails():
        raise RuntimeError("cannot reach redis://:hunter2@db:6379/0")

    thread = threading.Thread(target=fails, name="ping")
    thread.start()
    thread.join()
    err = capsys.readouterr().err
    [line] = err.strip().splitlines()
    assert "thread_failed" in line and "thread=ping" in line and "RuntimeError" in line
    assert "hunter2" not in err and "Traceback" not in err
