"""The dry run is the run (bench/dry_run_property.py), a few examples in the suite.

Hypothesis draws a config, a history in Redis, a moment and a command; the command runs with
--dry-run through the CLI in process, then for real against the test's redis-server, and the
two are compared session by session, task by task; then a cron tick after the close must
finish every session that has not given up. The bench runs many more examples by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import dry_run_property  # noqa: E402

EXAMPLES = 6  # about a second each (most of it the real run's supervisor process)


def test_what_the_dry_run_says_is_what_the_run_does(tmp_path, redis_url, calendar_cache):
    bench = dry_run_property.Bench(tmp_path, redis_url, calendar_cache)
    dry_run_property.run_property(bench, EXAMPLES)
    assert bench.tried >= EXAMPLES
