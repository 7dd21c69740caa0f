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
- one cycle of 10, 100 and 1,000 no-op `python` tasks (`run --date D`): the runner's overhead
  per task (cycle wall minus the tasks' own time) should stay flat, and so should the
  Redis round trips per task.

Each history lives under its own key prefix, so the runs interleave. With `--also DIR`,
the same rows are measured for the tradeul_maint package in DIR (e.g. a `git archive` of an
older commit).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
from pathlib import Path

from bench_cycle import Bench, config
from benchlib import CONSOLE_SCRIPT, Timed, clean_env, interleave, redis_server, seed_done

from tradeul_maint.calendar import load_calendar
from tradeul_maint.settings import CalendarOverrides

NOW = "2026-11-30T12:00"  # a Monday before its window; the sessions before it are done
HISTORIES = (7, 250, 2500)
CYCLES = (10, 100, 1000)
TASKS = ["load_ohlc", "load_volume_slots", "calculate_atr", "calculate_rvol_averages", "clear_realtime_caches",
         "snapshot"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--cycles", type=int, default=3, help="runs of each cycle size")
    parser.add_argument("--tcp", action="store_true", help="redis-server on a loopback TCP port, not a unix socket")
    parser.add_argument("--also", type=Path, metavar="DIR", help="also measure the package in DIR")
    args = parser.parse_args()
    trees: list[tuple[str, Path | None]] = [("this tree", None)] + ([(str(args.also), args.also)] if args.also else [])

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        with redis_server(root / "redis", tcp=args.tcp) as url:
            state = root / "state"
            calendar = load_calendar("XNYS", CalendarOverrides(), state / "cache")
            history = calendar.sessions_up_to(dt.date(2026, 11, 27), max(HISTORIES))
            rows: dict[str, list[Timed]] = {"tick": [], "status": [], "status --lookback N (table, piped)": [],
                                            "status --lookback N --json": []}
            for n in HISTORIES:
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


if __name__ == "__main__":
    sys.exit(main())
