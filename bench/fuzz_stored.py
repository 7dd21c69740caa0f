"""The stored-value fuzz of tests/test_fuzz_stored.py at length: hundreds of hostile worlds, every command on each.

    python bench/fuzz_stored.py [--examples 300] [--seed N]

The suite runs issue 19's world through every command and a few random worlds through a
few commands each (seconds); this runs `--examples` random worlds through all seventeen
commands (each world written anew before each command), against the same real
redis-server the suite's fixtures start. It prints pytest's verdict and the time taken;
a failure prints the smallest world hypothesis found that breaks a command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    args = parser.parse_args()
    env = {**os.environ, "TRADEUL_MAINT_FUZZ_EXAMPLES": str(args.examples)}
    command = [sys.executable, "-m", "pytest", "tests/test_fuzz_stored.py", "-n", "0", "-q", "-o", "timeout=0",
               "-p", "no:cacheprovider"] + ([f"--hypothesis-seed={args.seed}"] if args.seed is not None else [])
    start = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=env)
    seconds = time.monotonic() - start
    print(f"{args.examples} random worlds (+ the explicit ones) x 17 commands: {seconds:.0f} s, "
          f"{'passed' if result.returncode == 0 else 'FAILED'}")
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
