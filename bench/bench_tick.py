"""Benchmark: the cron tick with nothing to do, against `python -c "import redis"`, in the same run.

    python bench/bench_tick.py [--runs 21] [--tcp] [--also DIR]

Starts its own redis-server (the one the embedded Redis uses) on a unix socket (`--tcp`:
a loopback port) in a temporary directory, stores done status documents for the last
7 XNYS sessions, and times, interleaved round by round so drift on a shared machine hits
all alike (median of `--runs`, peak RSS the highest seen):

- `python -c pass` and `python -c "import redis"`: the interpreter, and the floor of any
  Python process that talks to Redis (the baseline the targets are relative to);
- a minimal typer app declaring the same global options and `run --now` and doing
  nothing else, after `import redis`: the floor of a tick that goes through typer;
- `tradeul-maint -q run` as cron calls it (the console script), outside the window with
  every session of the lookback done: it must print nothing and exit 0; also as
  `python -m tradeul_maint -q run`;
- the same tick with examples/phases.toml, ten jobs (every phase of the trading day), each
  job's lookback done: their states are read in one round trip, so it must not cost ten ticks;
- the same tick with an empty calendar cache (the first run after install, or after the
  cache expired): it builds the cache from exchange-calendars;
- with `--also DIR`, the tick of the tradeul_maint package in DIR (e.g. `git archive` of an
  older commit), for a before/after in one run.

Then `python -X importtime` of the tick lists what it imported: no pandas, numpy or
exchange_calendars. Exits 1 when the tick takes more than 1.5x `import redis`, peaks
above 60 MB, or imports one of those, or when the ten-job tick costs more than 1.2x the one-job tick.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from benchlib import CONSOLE_SCRIPT, GNU_TIME, REPO, Timed, clean_env, interleave, redis_server, seed_done

from tradeul_maint.calendar import load_calendar
from tradeul_maint.settings import CalendarOverrides

NOW = "2026-11-30T12:00"  # a Monday before its window; the sessions before it are done
TARGET_RATIO = 1.5
TARGET_RSS_MB = 60
TARGET_JOBS_RATIO = 1.2  # the ten-job tick against the one-job tick
FORBIDDEN = ("pandas", "numpy", "exchange_calendars")

TYPER_FLOOR = '''
from pathlib import Path
from typing import Annotated, Optional
import redis, typer
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
@app.callback()
def main(config: Annotated[Optional[Path], typer.Option("--config")] = None,
         redis_url: Annotated[Optional[str], typer.Option("--redis-url")] = None,
         state_dir: Annotated[Optional[Path], typer.Option("--state-dir")] = None,
         log_dir: Annotated[Optional[Path], typer.Option("--log-dir")] = None,
         verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
         quiet: Annotated[bool, typer.Option("-q", "--quiet")] = False) -> None:
    pass
@app.command()
def run(now: Annotated[Optional[str], typer.Option("--now", envvar="TRADEUL_MAINT_NOW")] = None) -> None:
    pass
@app.command()
def status() -> None:
    pass
app(["-q", "run"], prog_name="tradeul-maint")
'''


def imported_modules(argv: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, cwd=cwd, capture_output=True,
                            text=True)
    return [line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
            and not line.endswith("| imported package")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--tcp", action="store_true", help="redis-server on a loopback TCP port, not a unix socket")
    parser.add_argument("--also", type=Path, metavar="DIR", help="also time the tick of the package in DIR")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-tick-") as tmp:
        root = Path(tmp)
        with redis_server(root / "redis", tcp=args.tcp) as url:
            config = root / "maint.toml"
            shutil.copy(REPO / "examples" / "maint.toml", config)
            state = root / "state"
            calendar = load_calendar("XNYS", CalendarOverrides(), state / "cache")
            seed_done(url, calendar.sessions_up_to(dt.date(2026, 11, 27), 7),
                      ["load_ohlc", "load_volume_slots", "calculate_atr", "calculate_rvol_averages",
                       "clear_realtime_caches", "snapshot"])
            phases = tomllib.loads((REPO / "examples" / "phases.toml").read_text())
            for name, job in phases["jobs"].items():  # each job's lookback (and the session of the 30th) done
                seed_done(url, calendar.sessions_up_to(dt.date(2026, 11, 30), 6),
                          [t["name"] for t in job["tasks"]], prefix=f"maintenance:{name}")
            env = clean_env(TRADEUL_MAINT_CONFIG=str(config), TRADEUL_MAINT_STATE_DIR=str(state),
                            TRADEUL_MAINT_LOG_DIR=str(root / "logs"), TRADEUL_MAINT_REDIS_URL=url,
                            TRADEUL_MAINT_NOW=NOW)
            cold_state = root / "cold-state"

            def empty_cache() -> None:
                shutil.rmtree(cold_state / "cache", ignore_errors=True)

            py = sys.executable
            tick = Timed("tradeul-maint -q run", [str(CONSOLE_SCRIPT), "-q", "run"], env, root)
            jobs = Timed("tick, 10 jobs (examples/phases.toml)", [str(CONSOLE_SCRIPT), "-q", "run"],
                         {**env, "TRADEUL_MAINT_CONFIG": str(REPO / "examples" / "phases.toml")}, root)
            commands = [
                Timed("python -c pass", [py, "-c", "pass"], env, root),
                base := Timed("python -c 'import redis'", [py, "-c", "import redis"], env, root),
                Timed("typer floor: import redis + typer app", [py, "-c", TYPER_FLOOR], env, root),
                tick,
                jobs,
                Timed("python -m tradeul_maint -q run", [py, "-m", "tradeul_maint", "-q", "run"], env, root),
                cold := Timed("tick, empty calendar cache", [str(CONSOLE_SCRIPT), "-q", "run"],
                              {**env, "TRADEUL_MAINT_STATE_DIR": str(cold_state)}, root, before_each=empty_cache),
            ]
            if args.also:
                # A state directory of its own: another version may keep its calendar cache differently.
                commands.append(Timed(f"tick of {args.also}", [py, "-m", "tradeul_maint", "-q", "run"],
                                      {**env, "PYTHONPATH": str(args.also.resolve()),
                                       "TRADEUL_MAINT_STATE_DIR": str(root / "also-state")}, root))
            interleave(commands, args.runs)
            modules = imported_modules([str(CONSOLE_SCRIPT), "-q", "run"], env, root)

    print(f"no-op tick, median of {args.runs} runs, interleaved; redis-server on "
          f"{'TCP localhost' if args.tcp else 'a unix socket'}; peak RSS from {GNU_TIME or 'nothing (no GNU time)'}")
    print(f"{'command':<44} {'median':>9} {'min':>9} {'x import redis':>14} {'peak RSS':>9}")
    for c in commands:
        print(f"{c.label:<44} {c.median * 1000:>7.1f}ms {min(c.walls) * 1000:>7.1f}ms "
              f"{c.median / base.median:>13.2f}x {c.rss_mb:>7.1f}MB")
    forbidden = sorted({m for m in modules if m.split(".")[0] in FORBIDDEN})
    heavy = sorted({m.split(".")[0] for m in modules} & {"typer", "click", "pydantic", "rich", "loguru", "tomllib"})
    print(f"the tick imported {len(modules)} modules; of pandas/numpy/exchange_calendars: {forbidden or 'none'}; "
          f"of typer/click/pydantic/rich/loguru/tomllib: {', '.join(heavy) or 'none'}")
    ratio = tick.median / base.median
    per_jobs = jobs.median / tick.median
    ok = ratio <= TARGET_RATIO and (not GNU_TIME or tick.rss_mb <= TARGET_RSS_MB) and not forbidden and \
        per_jobs <= TARGET_JOBS_RATIO
    print(f"{'OK' if ok else 'NOT OK'}: tick {ratio:.2f}x import redis (target <= {TARGET_RATIO}x), peak RSS "
          f"{tick.rss_mb:.1f} MB (target <= {TARGET_RSS_MB} MB); ten jobs {per_jobs:.2f}x the one-job tick (target "
          f"<= {TARGET_JOBS_RATIO}x); empty cache {cold.median * 1000:.0f} ms, {cold.rss_mb:.1f} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
