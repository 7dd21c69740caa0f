"""How `logs` scales with the size of the log: run by hand, not a test.

    python bench/bench_logs.py [--repeat 7] [--keep DIR]

Writes two logs in the format the tool writes, each a current file plus 4 rotated ones:
5 MB in all (rotation at 1 MB) and 50 MB (rotation at 10 MB). Then times, best of
--repeat:

- `tradeul-maint logs -n 100` as a subprocess (what an operator waits for) on both, and
  the reading alone (`logread.last_entries`, in process), with the 50 MB / 5 MB ratio;
  the target is 1.3x at most: the last entries are found by reading backwards.
- the filtered form on 50 MB, `logs -n 100 --task X`, for a task in every cycle (the
  reading stops after 100 matches) and for one that only appears in the oldest file (the
  worst case: every file is scanned), against `grep -c '"task": "X"'` over the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tradeul_maint.base.logfile import MAIN_LOG
from tradeul_maint.observe import logread

MB = 1024 * 1024
TASKS = [f"task_{n}" for n in range(8)]
RARE = "rare_task"


def entry(i: int, task: str) -> str:
    event, level, extra = ("task_completed", "INFO", {"duration_seconds": 1.25, "attempts": 1})
    if i % 50 == 0:
        event, level, extra = ("task_failed", "ERROR", {"error": "exit code 3", "output": "line\n" * 20})
    return json.dumps({"time": f"2026-11-25T22:{i // 60 % 60:02d}:{i % 60:02d}.000+00:00", "level": level,
                       "event": event, "date": "2026-11-25", "task": task, "run_id": f"{i // 100:012x}",
                       **extra}, ensure_ascii=False) + "\n"


def write_log(directory: Path, total: int, rotated: int = 4) -> None:
    """`rotated` full rotated files and a full current one, `total` bytes in all; RARE only in the oldest."""
    directory.mkdir(parents=True)
    per_file = total // (rotated + 1)
    i = 0
    for number in list(range(rotated, 0, -1)) + [0]:
        lines, size = [], 0
        while size < per_file:
            task = RARE if number == rotated and i % 1000 == 0 else TASKS[i % len(TASKS)]
            line = entry(i, task)
            lines.append(line)
            size += len(line)
            i += 1
        name = MAIN_LOG if number == 0 else f"{MAIN_LOG}.{number}"
        (directory / name).write_text("".join(lines))


def best(repeat: int, func) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def cli(directory: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEUL_MAINT_")}
    env.update(TRADEUL_MAINT_STATE_DIR=str(directory / "state"))
    result = subprocess.run([sys.executable, "-m", "tradeul_maint", "--log-dir", str(directory / "logs"),
                             "logs", *args], env=env, cwd=directory, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="write the logs here and leave them")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-logs-"))
    try:
        run(root, args.repeat)
    finally:
        if args.keep is None:
            shutil.rmtree(root)


def run(root: Path, repeat: int) -> None:
    small, large = root / "5MB", root / "50MB"
    write_log(small / "logs", 5 * MB)
    write_log(large / "logs", 50 * MB)
    files = {d: sorted((d / "logs").glob(MAIN_LOG + "*")) for d in (small, large)}
    for d in (small, large):
        sizes = ", ".join(f"{p.name} {p.stat().st_size / MB:.1f}" for p in files[d])
        print(f"{d.name}: {sizes} (MB)")
    assert len(cli(large, "-n", "100", "--json").stdout.splitlines()) == 100
    print(f"\nbest of {repeat}")

    cmd = {d: best(repeat, lambda d=d: cli(d, "-n", "100")) for d in (small, large)}
    read = {d: best(repeat, lambda d=d: logread.last_entries(d / "logs" / MAIN_LOG, logread.Query(), 100))
            for d in (small, large)}
    print(f"logs -n 100            5 MB {cmd[small] * 1000:7.1f} ms   50 MB {cmd[large] * 1000:7.1f} ms   "
          f"ratio {cmd[large] / cmd[small]:.2f}x")
    print(f"  reading alone        5 MB {read[small] * 1000:7.2f} ms   50 MB {read[large] * 1000:7.2f} ms   "
          f"ratio {read[large] / read[small]:.2f}x")

    print("\nfiltered, 50 MB:")
    for task, what in ((TASKS[3], "in every cycle"), (RARE, "oldest file only: full scan")):
        shown = cli(large, "-n", "100", "--task", task, "--json").stdout.splitlines()
        grep_argv = ["grep", "-c", f'"task": "{task}"', *map(str, files[large])]
        counted = sum(int(line.rsplit(":", 1)[1]) for line in
                      subprocess.run(grep_argv, capture_output=True, text=True).stdout.splitlines())
        assert len(shown) == min(100, counted), (len(shown), counted)
        ours = best(repeat, lambda: cli(large, "-n", "100", "--task", task))
        reading = best(repeat, lambda: logread.last_entries(large / "logs" / MAIN_LOG,
                                                            logread.Query(task=task), 100))
        grep = best(repeat, lambda: subprocess.run(grep_argv, capture_output=True))
        print(f"  --task {task:<10} ({what}, {counted} matches): logs {ours * 1000:7.1f} ms "
              f"(reading {reading * 1000:6.1f} ms)   grep -c {grep * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
