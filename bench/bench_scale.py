"""Benchmark: how the cost grows with stored history and with the size of a cycle.

    python bench/bench_scale.py [--runs 11] [--tcp] [--also DIR]

Starts its own redis-server (the one the embedded Redis uses) on a unix socket (`--tcp`: a
loopback port) in a temporary directory and measures, each row next to the others in the
same run:

- the no-op tick (`tradeul-maint -q run`, outside the window) with 7, 250 and 2,500 done
  sessions stored: it reads only the lookback, so it should stay flat;
- `status` (the default lookback of 7) with the same histories: flat too;
- `status --lookback N` for N = 7, 250 and 2,500, as a table (piped, so plain text) and
  as `--json`: the work grows with N, the cost should grow no faster;
- one cycle of 6, 50, 200 and 1,000 no-op `python` tasks (`run --date D`): the runner's overhead
  per task (cycle wall minus the tasks' own time) should stay flat, and so should the
  Redis round trips per task;
- the state write of one scheduling step (a task completed, the next one started: two
  transitions), in process, for 6, 50, 200 and 1,000 tasks whose records carry what a
  cycle records (times, duration, attempts, a result): the whole status document as one
  fenced script. A tree that still has the transitions hash (`--also` an older commit)
  also gets its batch of transitions measured the same way (`record`: states patched in
  place, details in the hash).

Each history lives under its own key prefix, so the runs interleave. With `--also DIR`,
the same rows are measured for the tradeul_maint package in DIR (e.g. a `git archive` of an
older commit). `--part cycles` measures the cycles and the state writes only, `--part write-path` the
state writes alone (a few seconds).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_cycle import Bench, config
from benchlib import CONSOLE_SCRIPT, Timed, clean_env, interleave, redis_server, seed_done

from tradeul_maint.config.settings import CalendarOverrides
from tradeul_maint.plan.calendar import load_calendar

NOW = "2026-11-30T12:00"  # a Monday before its window; the sessions before it are done
HISTORIES = (7, 250, 2500)
CYCLES = (6, 50, 200, 1000)
WRITE_SIZES = (6, 50, 200, 1000)
TASKS = ["load_ohlc", "load_volume_slots", "calculate_atr", "calculate_rvol_averages", "clear_realtime_caches",
         "snapshot"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--cycles", type=int, default=3, help="runs of each cycle size")
    parser.add_argument("--tcp", action="store_true", help="redis-server on a loopback TCP port, not a unix socket")
    parser.add_argument("--also", type=Path, metavar="DIR", help="also measure the package in DIR")
    parser.add_argument("--part", choices=("all", "cycles", "write-path"), default="all",
                        help="cycles: the cycles and the state writes; write-path: the state writes alone")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)  # the write path, in this process
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(write_path(args.worker, args.runs)))
        return 0
    trees: list[tuple[str, Path | None]] = [("this tree", None)] + ([(str(args.also), args.also)] if args.also else [])
    if args.part == "write-path":
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, \
                redis_server(Path(tmp) / "redis", tcp=args.tcp) as url:
            print_write_path(trees, url, args.runs, args.tcp)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        with redis_server(root / "redis", tcp=args.tcp) as url:
            state = root / "state"
            calendar = load_calendar("XNYS", CalendarOverrides(), state / "cache")
            history = calendar.sessions_up_to(dt.date(2026, 11, 27), max(HISTORIES))
            rows: dict[str, list[Timed]] = {"tick": [], "status": [], "status --lookback N (table, piped)": [],
                                            "status --lookback N --json": []}
            for n in HISTORIES if args.part == "all" else ():
                prefix = f"bench{n}"
                seed_done(url, history[-n:], TASKS, prefix=prefix)
                toml = root / f"maint-{n}.toml"
                toml.write_text(f'[redis]\nkey_prefix = "{prefix}"\nstatus_ttl_days = 4000\n' + "".join(
                    f'[[tasks]]\nname = "{t}"\ncommand = ["true"]\n' for t in TASKS))
                for label, pythonpath in trees:
                    # A state directory per tree: another version may keep its calendar cache differently.
                    env = clean_env(TRADEUL_MAINT_CONFIG=str(toml),
                                    TRADEUL_MAINT_STATE_DIR=str(state if pythonpath is None else root / "also-state"),
                                    TRADEUL_MAINT_LOG_DIR=str(root / "logs"), TRADEUL_MAINT_REDIS_URL=url,
                                    TRADEUL_MAINT_NOW=NOW)
                    if pythonpath is not None:
                        env["PYTHONPATH"] = str(pythonpath.resolve())
                    tag = f"{n:>5} stored" + ("" if pythonpath is None else f" [{label}]")
                    rows["tick"].append(Timed(f"tick, {tag}", [str(CONSOLE_SCRIPT), "-q", "run"], env, root))
                    rows["status"].append(Timed(f"status, {tag}", [str(CONSOLE_SCRIPT), "status"], env, root,
                                                silent=False))
                    rows["status --lookback N (table, piped)"].append(Timed(
                        f"status --lookback {n}" + ("" if pythonpath is None else f" [{label}]"),
                        [str(CONSOLE_SCRIPT), "status", "--lookback", str(n)], env, root, silent=False))
                    rows["status --lookback N --json"].append(Timed(
                        f"status --lookback {n} --json" + ("" if pythonpath is None else f" [{label}]"),
                        [str(CONSOLE_SCRIPT), "status", "--lookback", str(n), "--json"], env, root, silent=False))
            interleave([t for group in rows.values() for t in group], args.runs, warmup=1)
            rows = {title: group for title, group in rows.items() if group}

            cycles: dict[str, dict[int, list]] = {label: {n: [] for n in CYCLES} for label, _ in trees}
            (root / "cycles").mkdir()
            benches = {label: Bench(root / "cycles", url, path) for label, path in trees}
            for bench in benches.values():
                bench.warm()
            for _ in range(args.cycles):
                for n in CYCLES:
                    toml = config({f"noop{i:04d}": (None, []) for i in range(n)}, 1)
                    for label, bench in benches.items():
                        cycles[label][n].append(bench.cycle(toml))
            print_write_path(trees, url, args.runs, args.tcp)

    print(f"median of {args.runs} runs (cycles: of {args.cycles}); redis-server on "
          f"{'TCP localhost' if args.tcp else 'a unix socket'}")
    for title, group in rows.items():
        print(f"\n{title}")
        first = group[0].median
        for t in group:
            print(f"  {t.label:<44} {t.median * 1000:8.1f} ms  ({t.median / first:.2f}x the first row)")
        if "lookback" in title:
            mine = group[::len(trees)]  # this tree's rows, one per history size
            per = (mine[-1].median - mine[0].median) / (HISTORIES[-1] - HISTORIES[0]) * 1000
            print(f"  each session beyond the first {HISTORIES[0]} adds {per:.3f} ms")
    print("\ncycle of N no-op python tasks (max_parallel 1)")
    for label in cycles:
        for n in CYCLES:
            runs = cycles[label][n]
            duration = statistics.median(c.duration for c in runs)
            overhead = statistics.median((c.duration - c.own) / n * 1000 for c in runs)
            scripts = statistics.median(c.commands.get("evalsha", 0) / n for c in runs)
            wall = statistics.median(c.wall for c in runs)
            print(f"  {n:>5} tasks{'' if label == 'this tree' else f' [{label}]'}: cycle {duration:7.3f}s, "
                  f"overhead {overhead:5.2f} ms/task, {scripts:4.2f} state writes (EVALSHA)/task, "
                  f"whole command {wall:6.2f}s")
    return 0


def write_path(url: str, rounds: int) -> dict[str, dict[str, float]]:
    """Milliseconds per scheduling step of a chain of N tasks, by write path, median of `rounds` cycles.

    Each step records what the runner records when a task ends and the next starts: the
    ended task completed (with its times, duration, attempts and result), the next in
    progress. Runs in the process of the tree under test (`--worker`), so that an older
    tree is measured with its own store.
    """
    import redis

    from tradeul_maint.redisio.keys import Keys
    from tradeul_maint.state.document import COMPLETED, IN_PROGRESS, PENDING, SessionStatus, TaskRecord
    from tradeul_maint.state.lock import RunLock
    from tradeul_maint.state.store import StateStore

    client = redis.Redis.from_url(url)
    store = StateStore(client, Keys("writepath"), 30, 60)
    lock = RunLock(client, Keys("writepath").lock, 60, "bench", "2026-11-25T22:00:00+00:00")
    lock.acquire()
    session = dt.date(2026, 11, 25)
    figures: dict[str, dict[str, float]] = {}
    paths = ["whole"] + (["record"] if hasattr(store, "record") else [])
    try:
        for n in WRITE_SIZES:
            names = [f"task_{i:04d}" for i in range(n)]
            per_step: dict[str, list[float]] = {path: [] for path in paths}
            size = 0
            for _ in range(rounds):
                for path in paths:
                    status = SessionStatus(session, started_at=dt.datetime(2026, 11, 25, 22, tzinfo=dt.timezone.utc),
                                           attempts=1, run_id="bench", runner="bench:1",
                                           tasks={name: PENDING for name in names},
                                           details={name: TaskRecord() for name in names})
                    slots = store.write(lock.token, status)
                    began = time.perf_counter()
                    for i, name in enumerate(names):
                        changed = [name]
                        if i:
                            done = status.details[names[i - 1]]
                            status.tasks[names[i - 1]] = COMPLETED
                            done.finished_at, done.duration_seconds = "2026-11-25T22:00:01.234+00:00", 1.234
                            done.attempts, done.result = 1, {"rows": 12345}
                            changed.insert(0, names[i - 1])
                        status.tasks[name] = IN_PROGRESS
                        status.details[name].started_at = "2026-11-25T22:00:00.000+00:00"
                        if path == "whole":
                            store.write(lock.token, status)
                        elif not store.record(lock.token, status, changed, slots):
                            raise SystemExit("record refused a step")
                    per_step[path].append((time.perf_counter() - began) / n * 1000)
                    if path == "whole":
                        size = len(store.client.get(Keys("writepath").status(session)))
            figures[str(n)] = {**{path: statistics.median(v) for path, v in per_step.items()}, "bytes": size}
    finally:
        lock.release()
        client.close()
    return figures


def print_write_path(trees: list[tuple[str, Path | None]], url: str, rounds: int, tcp: bool) -> None:
    """The write path of each tree, measured in a process of its own (its own package on the path).

    The trees take turns, one cycle of each size at a time, so that a shared machine's load
    falls on them alike; the figure is the median over the rounds.
    """
    samples: dict[str, list[dict]] = {label: [] for label, _ in trees}
    for _ in range(rounds):
        for label, path in trees:
            env = clean_env()
            if path is not None:
                env["PYTHONPATH"] = str(path.resolve())
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", url, "--runs", "1"],
                                 env=env, capture_output=True, text=True, check=True, cwd=os.getcwd())
            samples[label].append(json.loads(out.stdout))
    print(f"\nstate write per scheduling step (a task completed + the next in progress), chain of N tasks, "
          f"median of {rounds} cycles, redis-server on {'TCP localhost' if tcp else 'a unix socket'}")
    for label, runs in samples.items():
        for n in runs[0]:
            paths = ", ".join(f"{path} {statistics.median(r[n][path] for r in runs):.3f} ms"
                              for path in runs[0][n] if path != "bytes")
            print(f"  {int(n):>5} tasks{'' if label == 'this tree' else f' [{label}]'}: {paths} "
                  f"(the whole document {runs[0][n]['bytes'] / 1024:.1f} KB at the end)")


if __name__ == "__main__":
    sys.exit(main())
