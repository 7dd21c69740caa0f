"""Benchmark: `status --lookback 250` against `--lookback 7`, in the same run, on a real redis-server.

Run by hand:  python bench/bench_status.py [--repeat 9] [--tasks 6]

It starts its own redis-server (the one the embedded Redis uses) on a free TCP port in a
temporary directory, stores a status document for each of the last 250 XNYS sessions,
then measures, for each lookback:

- round trips: requests the client sent (a counting connection, in process),
- commands: what Redis executed (INFO commandstats deltas; a pipeline is one round trip
  but several commands),
- wall time: the median of `--repeat` runs of `tradeul-maint status` as a subprocess
  (what an operator or a monitoring check pays), and in process for the table and for
  `--json` (the command alone, without the interpreter start; `--json` without the cost
  of drawing a rich table of 250 rows).

The lookbacks alternate so drift hits both alike. It exits 1 when the subprocess wall
time ratio of 250 to 7 is 1.5 or more, or when 250 sessions cost more round trips than 7.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from redis.connection import AbstractConnection
from typer.testing import CliRunner

from tradeul_maint.cli.main import app
from tradeul_maint.config.settings import CalendarOverrides
from tradeul_maint.plan.calendar import load_calendar
from tradeul_maint.redisio.embedded import redis_server_binary

NOW = "2026-11-30T18:00"  # a Monday after its window: every session of the lookback is due
LOOKBACKS = (7, 250)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("redis-server did not start")
            time.sleep(0.02)


def seed(client: redis.Redis, sessions: list[dt.date], tasks: list[str]) -> None:
    """One done status document per session, with per-task details, as a cycle of this tool writes it."""
    pipe = client.pipeline(transaction=False)
    for session in sessions:
        start = dt.datetime.combine(session, dt.time(22, 0), dt.timezone.utc)
        doc = {"date": session.isoformat(), "started_at": start.isoformat(),
               "completed_at": (start + dt.timedelta(minutes=3)).isoformat(), "duration_seconds": 180.0,
               "all_success": True, "tasks": {t: "completed" for t in tasks},
               "task_details": {t: {"started_at": start.isoformat(), "finished_at": start.isoformat(),
                                    "duration_seconds": 30.0, "attempts": 1, "result": {"rows": 12345}}
                                for t in tasks},
               "attempts": 1, "run_id": "bench", "runner": "bench:1", "interrupted": None}
        pipe.set(f"maintenance:status:{session.isoformat()}", json.dumps(doc), ex=400 * 86400)
    pipe.execute()


class CountingConnection:
    """Counts the requests sent: a pipeline is one, a single command one."""

    def __init__(self) -> None:
        self.sent = 0
        self._original = AbstractConnection.send_packed_command

    def __enter__(self) -> CountingConnection:
        original = self._original

        def counting(conn, command, check_health=True):
            self.sent += 1
            return original(conn, command, check_health)

        AbstractConnection.send_packed_command = counting
        return self

    def __exit__(self, *exc: object) -> None:
        AbstractConnection.send_packed_command = self._original


def commandstats(client: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in client.info("commandstats").items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--tasks", type=int, default=6, help="tasks per session document")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        root = Path(tmp)
        proc, url = start_redis(root)
        try:
            tasks = [f"task_{i}" for i in range(args.tasks)]
            config = root / "tradeul-maint.toml"
            config.write_text("[redis]\nstatus_ttl_days = 400\n" + "".join(
                f'[[tasks]]\nname = "{t}"\ncommand = ["true"]\n' for t in tasks))
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRADEUL_MAINT_")},
                   "TRADEUL_MAINT_CONFIG": str(config), "TRADEUL_MAINT_STATE_DIR": str(root / "state"),
                   "TRADEUL_MAINT_LOG_DIR": str(root / "logs"), "TRADEUL_MAINT_REDIS_URL": url}
            calendar = load_calendar("XNYS", CalendarOverrides(), root / "state" / "cache")  # warm the cache
            client = redis.Redis.from_url(url)
            seed(client, calendar.sessions_up_to(dt.date(2026, 11, 30), max(LOOKBACKS)), tasks)

            runner = CliRunner()
            results: dict[int, dict] = {}
            for lookback in LOOKBACKS:
                argv = ["status", "--lookback", str(lookback), "--now", NOW]
                client.config_resetstat()
                with CountingConnection() as counter:
                    result = runner.invoke(app, argv, env=env, catch_exceptions=False)
                stats = commandstats(client)
                stats.pop("config", None)  # our own RESETSTAT
                if result.exit_code != 0:
                    raise SystemExit(f"status --lookback {lookback} exited {result.exit_code}: {result.output}")
                rows = sum(1 for line in result.stdout.splitlines() if line[:2] == "20")
                results[lookback] = {"round_trips": counter.sent, "commands": stats, "rows": rows,
                                     "subprocess": [], "in_process": [], "json": []}

            for _ in range(args.repeat):
                for lookback in LOOKBACKS:
                    argv = ["status", "--lookback", str(lookback), "--now", NOW]
                    started = time.perf_counter()
                    subprocess.run([sys.executable, "-m", "tradeul_maint", *argv], env=env, cwd=root, check=True,
                                   stdout=subprocess.DEVNULL)
                    results[lookback]["subprocess"].append(time.perf_counter() - started)
                    started = time.perf_counter()
                    runner.invoke(app, argv, env=env, catch_exceptions=False)
                    results[lookback]["in_process"].append(time.perf_counter() - started)
                    started = time.perf_counter()
                    runner.invoke(app, [*argv, "--json"], env=env, catch_exceptions=False)
                    results[lookback]["json"].append(time.perf_counter() - started)
            client.close()
        finally:
            proc.terminate()
            proc.wait(10)

    small, large = (results[n] for n in LOOKBACKS)
    print(f"tradeul-maint status, {args.tasks} tasks per session, median of {args.repeat} runs, redis-server on "
          f"TCP localhost")
    print(f"{'lookback':>8}  {'rows':>4}  {'round trips':>11}  {'commands':<44}  {'subprocess':>10}  "
          f"{'in process':>10}  {'--json':>8}")
    for n in LOOKBACKS:
        res = results[n]
        commands = ", ".join(f"{k} {v}" for k, v in sorted(res["commands"].items()))
        print(f"{n:>8}  {res['rows']:>4}  {res['round_trips']:>11}  {commands:<44}  "
              f"{statistics.median(res['subprocess']) * 1000:>8.1f}ms  "
              f"{statistics.median(res['in_process']) * 1000:>8.1f}ms  "
              f"{statistics.median(res['json']) * 1000:>6.1f}ms")
    ratios = {kind: statistics.median(large[kind]) / statistics.median(small[kind])
              for kind in ("subprocess", "in_process", "json")}
    print(f"ratio {LOOKBACKS[1]}/{LOOKBACKS[0]}: round trips {large['round_trips'] / small['round_trips']:.2f}, "
          f"wall time {ratios['subprocess']:.2f} (subprocess), {ratios['in_process']:.2f} (in process, table), "
          f"{ratios['json']:.2f} (in process, --json)")
    ok = large["round_trips"] <= small["round_trips"] and ratios["subprocess"] < 1.5
    print("OK: under 1.5" if ok else "NOT OK: 250 sessions cost too much more than 7")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
