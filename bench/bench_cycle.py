"""Benchmark: what the runner adds around the tasks of one cycle, and how well it packs them.

    python bench/bench_cycle.py [--repeat 5] [--tcp | --latency MS] [--noop-only] [--also DIR ...]

Starts its own redis-server (the one the embedded Redis uses) on a unix socket (`--tcp`: a
loopback port) in a temporary directory and runs `tradeul-maint run --date D` (then with
`--force`, the same session again) as a subprocess, reading the figures back from the
session's status document and from Redis' INFO commandstats:

1. 200 no-op `python` tasks, max_parallel = 1: the cycle's wall time (`duration_seconds`)
   minus the tasks' own time (the sum of their `duration_seconds`), per task: target
   <= 1 ms; and the Redis commands the cycle sent, per task.
2. 8 independent tasks sleeping 1 s, max_parallel = 4: the cycle's wall time against the
   critical path (2 s): target <= 1.1x.
3. A 40-task graph of chains and a fan-in (see `graph`), max_parallel = 4, where
   configuration order, or counting tasks instead of seconds, is a poor schedule: the
   cycle's wall time against the critical path (which the width allows: total work / 4
   is shorter), first with durations unknown, then with the durations the first cycle
   recorded (`--force`), then for the next session in cron mode, which knows them from the
   sessions of its lookback: target <= 1.1x with known durations.

With `--also DIR` (repeatable), every figure is measured for the tradeul_maint package in DIR too (e.g. a
`git archive` of an older commit), in the same run. `--latency MS` reaches Redis through a proxy
that delays each way by MS (bench/latency_proxy.py), as a Redis on another host; `--noop-only`
runs only the first figure, with the range of the cycle's wall. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis
from benchlib import CONSOLE_SCRIPT, clean_env, redis_server, run_process

NOW = "2026-11-30T12:00"
SESSION = "2026-11-25"
NEXT_SESSION_WINDOW = "2026-11-27T17:05"  # inside the window of the session after SESSION (Thanksgiving between)
TASKS_MODULE = """\
import time


def noop(ctx):
    return None


def sleep(ctx):
    time.sleep(ctx.params["seconds"])
"""


def graph() -> dict[str, tuple[float, list[str]]]:
    """40 tasks: name -> (seconds, after). The long chain is listed last and is the shortest by count.

    Four chains of eight 0.1 s tasks, a chain of four 0.8 s tasks, three lone 0.3 s tasks,
    and a report after both kinds of chain. Critical path: the long chain and the report,
    3.4 s; total work 7.5 s, so four workers could finish in 3.4 s if the long chain starts
    at once. Configuration order, or counting tasks instead of seconds, starts the quick
    chains first and the long one 0.5 s late.
    """
    tasks: dict[str, tuple[float, list[str]]] = {}
    for chain in "abcd":
        for i in range(1, 9):
            tasks[f"quick_{chain}{i}"] = (0.1, [f"quick_{chain}{i - 1}"] if i > 1 else [])
    for i in range(1, 4):
        tasks[f"lone{i}"] = (0.3, [])
    for i in range(1, 5):
        tasks[f"long{i}"] = (0.8, [f"long{i - 1}"] if i > 1 else [])
    tasks["report"] = (0.2, ["long4"] + [f"quick_{chain}8" for chain in "abcd"])
    assert len(tasks) == 40, len(tasks)
    return tasks


def critical_path(tasks: dict[str, tuple[float, list[str]]]) -> float:
    finish: dict[str, float] = {}

    def end(name: str) -> float:
        if name not in finish:
            seconds, after = tasks[name]
            finish[name] = seconds + max((end(d) for d in after), default=0.0)
        return finish[name]

    return max(end(n) for n in tasks)


def config(tasks: dict[str, tuple[float | None, list[str]]], max_parallel: int) -> str:
    out = [f"[run]\nmax_parallel = {max_parallel}\n"]
    for name, (seconds, after) in tasks.items():
        out.append(f'[[tasks]]\nname = "{name}"\n')
        if seconds is None:
            out.append('python = "benchtasks:noop"\n')
        else:
            out.append(f'python = "benchtasks:sleep"\nparams = {{ seconds = {seconds} }}\n')
        if after:
            out.append(f"after = {json.dumps(after)}\n")
    return "".join(out)


@dataclass
class Cycle:
    wall: float  # the whole command, interpreter start included
    duration: float  # the cycle, as recorded in the status document
    own: float  # the sum of the tasks' own durations
    commands: dict[str, int]  # what Redis executed during the command

    @property
    def calls(self) -> int:
        return sum(self.commands.values())


class Bench:
    def __init__(self, root: Path, url: str, pythonpath: Path | None):
        self.root, self.url = root, url
        self.client = redis.Redis.from_url(url)
        (root / "benchtasks.py").write_text(TASKS_MODULE)
        # A state directory per tree: another version may keep its calendar cache differently.
        state = root / ("state" if pythonpath is None else f"also-state-{pythonpath.name}")
        self.env = clean_env(TRADEUL_MAINT_STATE_DIR=str(state), TRADEUL_MAINT_LOG_DIR=str(root / "logs"),
                             TRADEUL_MAINT_REDIS_URL=url, TRADEUL_MAINT_NOW=NOW, PYTHONPATH=str(root))
        # This tree through its console script; another through `python -m`, since the console script names this
        # tree's entry point, which another version may keep elsewhere.
        self.command = [str(CONSOLE_SCRIPT)]
        if pythonpath is not None:
            self.env["PYTHONPATH"] = f"{pythonpath.resolve()}:{root}"
            self.command = [sys.executable, "-m", "tradeul_maint"]

    def cycle(self, toml: str, force: bool = False, cron_at: str | None = None) -> Cycle:
        """`run --date SESSION` (`--force`: again, keeping what Redis holds); `cron_at`: cron mode at that time."""
        path = self.root / "maint.toml"
        path.write_text(toml)
        if not force and cron_at is None:
            self.client.flushall()
        before = self.stats()
        argv = [*self.command, "--config", str(path), "run"]
        argv += ["--now", cron_at] if cron_at else ["--date", SESSION, *(["--force"] if force else [])]
        wall, _, code, out = run_process(argv, self.env, self.root)
        after = self.stats()
        if code != 0:
            raise SystemExit(f"run exited {code}:\n{out}")
        session = cron_at[:10] if cron_at else SESSION
        doc = json.loads(self.client.get(f"maintenance:status:{session}"))
        if not doc["all_success"]:
            raise SystemExit(f"the cycle failed: {doc}")
        own = sum(d.get("duration_seconds") or 0.0 for d in doc["task_details"].values())
        commands = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
        commands.pop("info", None)
        return Cycle(wall, doc["duration_seconds"], own, commands)

    def warm(self) -> None:
        """One untimed cycle: fills the bytecode cache and the calendar cache."""
        self.cycle(config({"warm": (None, [])}, 1))

    def stats(self) -> dict[str, int]:
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in self.client.info("commandstats").items()}


def commit() -> str:
    """The commit of the tree measured, with "+dirty" when it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def median_by(cycles: list[Cycle], key) -> float:
    return statistics.median(key(c) for c in cycles)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tcp", action="store_true", help="redis-server on a loopback TCP port, not a unix socket")
    parser.add_argument("--noop-only", action="store_true",
                        help="only the 200 no-op tasks (the runner's overhead), with each tree's range of cycle walls")
    parser.add_argument("--latency", type=float, default=0.0, metavar="MS",
                        help="reach redis-server through a proxy that delays each way by MS (a Redis on another host)")
    parser.add_argument("--also", type=Path, metavar="DIR", action="append", default=[],
                        help="also measure the package in DIR (repeatable)")
    args = parser.parse_args()
    load = os.getloadavg()  # the machine is shared: every figure is quoted with the load it was measured under
    trees: list[tuple[str, Path | None]] = [("this tree", None)] + [(str(also), also) for also in args.also]
    ok = True

    with tempfile.TemporaryDirectory(prefix="bench-cycle-") as tmp:
        root = Path(tmp)
        with redis_server(root / "redis", tcp=args.tcp, latency_ms=args.latency) as url:
            benches = {label: Bench(root, url, path) for label, path in trees}
            for bench in benches.values():
                bench.warm()
            noop = config({f"noop{i:03d}": (None, []) for i in range(200)}, 1)
            sleepers = config({f"sleep{i}": (1.0, []) for i in range(8)}, 4)
            dag = graph()
            cp, work = critical_path(dag), sum(s for s, _ in dag.values())
            dag_toml = config(dag, 4)
            next_toml = "[schedule]\nauto_recover = false\n" + dag_toml
            results: dict[str, dict[str, list[Cycle]]] = {
                label: {"noop": [], "sleep": [], "dag-first": [], "dag-known": [], "dag-next": []} for label in benches}
            for _ in range(args.repeat):
                for label, bench in benches.items():
                    results[label]["noop"].append(bench.cycle(noop))
                    if args.noop_only:
                        continue
                    results[label]["sleep"].append(bench.cycle(sleepers))
                    results[label]["dag-first"].append(bench.cycle(dag_toml))
                    results[label]["dag-known"].append(bench.cycle(dag_toml, force=True))
                    results[label]["dag-next"].append(bench.cycle(next_toml, cron_at=NEXT_SESSION_WINDOW))
            for bench in benches.values():
                bench.client.close()

    where = f"TCP localhost through a proxy adding {args.latency:g} ms each way" if args.latency else \
        "TCP localhost" if args.tcp else "a unix socket"
    print(f"median of {args.repeat} cycles each; redis-server on {where}; "
          f"commit {commit()}; load average (1, 5, 15 min) at the start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"at the end {os.getloadavg()[0]:.2f}")
    for label in benches:
        r = results[label]
        print(f"\n== {label}")
        overhead = median_by(r["noop"], lambda c: (c.duration - c.own) / 200 * 1000)
        writes = median_by(r["noop"], lambda c: c.commands.get("evalsha", 0) / 200)
        commands = ", ".join(f"{k} {v}" for k, v in sorted(r["noop"][len(r["noop"]) // 2].commands.items()))
        walls = [c.duration for c in r["noop"]]
        print(f"1. 200 no-op python tasks, max_parallel 1: cycle {median_by(r['noop'], lambda c: c.duration):.3f}s "
              f"({min(walls):.3f} to {max(walls):.3f}), "
              f"tasks' own {median_by(r['noop'], lambda c: c.own):.3f}s, overhead {overhead:.2f} ms/task "
              f"(target <= 1), whole command {median_by(r['noop'], lambda c: c.wall):.2f}s; state writes "
              f"(EVALSHA, one round trip each) {writes:.2f}/task; what Redis ran, inside scripts too: {commands}")
        if args.noop_only:
            ok = ok and (label != "this tree" or overhead <= 1)
            continue
        sleep = median_by(r["sleep"], lambda c: c.duration)
        print(f"2. 8 x 1 s, max_parallel 4: cycle {sleep:.3f}s = {sleep / 2:.3f}x the critical path of 2 s "
              f"(target <= 1.1x)")
        first = median_by(r["dag-first"], lambda c: c.duration)
        known = median_by(r["dag-known"], lambda c: c.duration)
        following = median_by(r["dag-next"], lambda c: c.duration)
        print(f"3. 40-task graph, max_parallel 4: critical path {cp:.1f}s, total work {work:.1f}s (/4 = "
              f"{work / 4:.2f}s); cycle with durations unknown {first:.3f}s = {first / cp:.3f}x, known from "
              f"the session's last cycle {known:.3f}s = {known / cp:.3f}x, the next session's cycle (cron mode) "
              f"{following:.3f}s = {following / cp:.3f}x (target <= 1.1x)")
        if label == "this tree":
            ok = overhead <= 1 and sleep / 2 <= 1.1 and known / cp <= 1.1 and following / cp <= 1.1
    print("\nOK" if ok else "\nNOT OK: a target is missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
