"""Benchmark: the `redis.delete_keys` built-in against the server's own time and the usual shell way, in one run.

    python bench/bench_delete_keys.py                  # 1,000,000 matching keys among 2,000,000
    python bench/bench_delete_keys.py --keys 300000    # 300,000 among 600,000

Starts a dedicated redis-server (the one the embedded Redis uses) on a unix socket in a
temporary directory, without persistence. For each method it loads N keys that match
`bench:hot:*` and N that do not (DEBUG POPULATE, or pipelined MSET where DEBUG is off),
deletes the matching ones, and checks that exactly those went.

The built-in runs in a process of its own, as the runner would run it. Its call is timed
(wall clock, from the call to its return) beside the server's own time for the same work:
the `usec` of SCAN and UNLINK in INFO commandstats, reset just before. The client is the
bottleneck when the ratio is high; the target is 1.5x at most. The shell way is

    redis-cli --scan --pattern 'bench:hot:*' | xargs -n 1000 redis-cli unlink

timed as a whole, like the built-in's process (interpreter start included). The built-in's
peak RSS (ru_maxrss) is measured at N and at N/10: it should not grow with the key count.
Exits 1 when the call takes more than 1.5x the server's time or its peak memory grows with
the key count. The shell way is printed for comparison, not judged: it runs two processes
side by side, so on a shared machine its time says more about the other jobs than about it.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

PATTERN = "bench:hot:*"
MEMORY_TOLERANCE_KB = 4096  # peak RSS may differ by allocator noise, not by key count
TARGET_SERVER_RATIO = 1.5  # the call's wall time over the server's own SCAN + UNLINK time


def start_server(directory: Path) -> tuple[subprocess.Popen, Path]:
    from tradeul_maint.redisio.embedded import redis_server_binary

    socket = directory / "redis.sock"
    proc = subprocess.Popen([redis_server_binary(), "--port", "0", "--unixsocket", str(socket), "--dir", str(directory),
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(unix_socket_path=str(socket))
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc, socket
        except (redis.ConnectionError, FileNotFoundError):
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("redis-server did not start")
            time.sleep(0.02)


def load(client: redis.Redis, matching: int) -> float:
    """`matching` keys under bench:hot: and as many under bench:cold:, on an empty server."""
    client.flushall()
    started = time.monotonic()
    try:
        client.execute_command("DEBUG", "POPULATE", matching, "bench:hot")
        client.execute_command("DEBUG", "POPULATE", matching, "bench:cold")
    except redis.ResponseError:  # DEBUG disabled (Redis 7 default): pipelined MSET
        client.flushall()
        for prefix in ("bench:hot", "bench:cold"):
            pipe = client.pipeline(transaction=False)
            for start in range(0, matching, 10_000):
                pipe.mset({f"{prefix}:{i}": "x" for i in range(start, min(matching, start + 10_000))})
                if len(pipe) >= 10:
                    pipe.execute()
            pipe.execute()
    assert client.dbsize() == 2 * matching
    return time.monotonic() - started


def check(client: redis.Redis, matching: int) -> None:
    left = sum(1 for _ in client.scan_iter(match=PATTERN, count=10_000))
    if left or client.dbsize() != matching:
        raise SystemExit(f"wrong result: {left} matching keys left, {client.dbsize()} keys in all "
                         f"(expected 0 and {matching})")


def run_builtin(client: redis.Redis, socket: Path) -> dict:
    """The built-in in a fresh process, as the runner would run it; its measurements and the server's time."""
    client.config_resetstat()
    started = time.monotonic()
    out = subprocess.run([sys.executable, __file__, "--child", str(socket)], capture_output=True, text=True,
                         check=True)
    report = json.loads(out.stdout)
    report["seconds"] = time.monotonic() - started
    stats = client.info("commandstats")
    report["server_seconds"] = sum(stats.get(f"cmdstat_{name}", {}).get("usec", 0) for name in ("scan", "unlink")) / 1e6
    return report


def run_shell(socket: Path) -> float:
    from tradeul_maint.redisio.embedded import redis_server_binary

    cli = Path(redis_server_binary()).with_name("redis-cli")
    if not cli.is_file():
        cli = Path(shutil.which("redis-cli") or "redis-cli")
    command = (f"'{cli}' -s '{socket}' --scan --pattern '{PATTERN}' | "
               f"xargs -n 1000 '{cli}' -s '{socket}' unlink > /dev/null")
    started = time.monotonic()
    subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], check=True)
    return time.monotonic() - started


def child(socket: str) -> None:
    """Run redis.delete_keys once and print what it deleted, its time and the process's peak RSS."""
    from loguru import logger

    from tradeul_maint.redisio.connection import client_for_url
    from tradeul_maint.run.builtins import delete_keys
    from tradeul_maint.run.tasks import TaskContext

    logger.remove()
    logger.add(sys.stderr, level="INFO", format="{message} {extra}")
    import redis.utils

    client = client_for_url(f"unix://{socket}")
    client.ping()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ctx = TaskContext(date=None, task="bench", run_id="bench", redis=client, logger=logger.bind(task="bench"),
                      params={"patterns": [PATTERN]})
    started = time.monotonic()
    delete_keys(ctx)
    print(json.dumps({"deleted": ctx.result["keys_deleted"], "call_seconds": time.monotonic() - started,
                      "hiredis": redis.utils.HIREDIS_AVAILABLE, "baseline_kb": baseline, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="matching keys (as many more do not match)")
    parser.add_argument("--child", metavar="SOCKET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    n, small = args.keys, args.keys // 10
    directory = Path(tempfile.mkdtemp(prefix="tm-bench-"))
    proc, socket = start_server(directory)
    client = redis.Redis(unix_socket_path=str(socket))
    try:
        print(f"loading {n:,} matching keys among {2 * n:,} ...", flush=True)
        print(f"  loaded in {load(client, n):.1f}s")
        tool = run_builtin(client, socket)
        check(client, n)
        assert tool["deleted"] == n, tool
        ratio = tool["call_seconds"] / tool["server_seconds"]
        print(f"redis.delete_keys ({'hiredis' if tool['hiredis'] else 'pure-Python'} parser): the call "
              f"{tool['call_seconds']:.2f}s, the server's SCAN + UNLINK {tool['server_seconds']:.2f}s "
              f"(INFO commandstats): {ratio:.2f}x (target <= {TARGET_SERVER_RATIO}x); the process "
              f"{tool['seconds']:.2f}s, peak RSS {tool['peak_kb'] / 1024:.1f} MB")

        load(client, n)
        shell = run_shell(socket)
        check(client, n)
        print(f"redis-cli --scan | xargs -n 1000 redis-cli unlink: {shell:.2f}s")

        load(client, small)
        tool_small = run_builtin(client, socket)
        check(client, small)
        print(f"redis.delete_keys on {small:,} among {2 * small:,}: {tool_small['seconds']:.2f}s, "
              f"peak RSS {tool_small['peak_kb'] / 1024:.1f} MB")
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(directory, ignore_errors=True)

    speedup = shell / tool["seconds"]
    growth_kb = tool["peak_kb"] - tool_small["peak_kb"]
    print(f"\nspeedup {speedup:.1f}x than the shell way; peak RSS {tool_small['peak_kb'] / 1024:.1f} MB at {small:,} keys "
          f"vs {tool['peak_kb'] / 1024:.1f} MB at {n:,} ({growth_kb / 1024:+.1f} MB)")
    ok = ratio <= TARGET_SERVER_RATIO and growth_kb <= MEMORY_TOLERANCE_KB
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
