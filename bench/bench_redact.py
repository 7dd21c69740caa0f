"""What redacting task output costs, and what it finds: the tool's patterns against detect-secrets' plugins.

    python bench/bench_redact.py [--mb 50] [--repeat 3]

Builds `--mb` MB of task output: lines a maintenance job prints (progress, counts, paths,
run ids, sha256 digests, UUIDs, ISO times, SQL), one line in 200 carrying a secret from
the corpus (bench/secrets_corpus.py, which tests/test_secrets.py also uses). Then times,
best of --repeat:

- `redact.scrub` over the output in 64 KiB pieces (the supervisor keeps a task's last
  64 KiB; the runner scrubs that), with the live password remembered, as in a run;
- detect-secrets 1.5 (`pip install detect-secrets`; not a dependency of the tool): every
  plugin of its default set, `analyze_line` on each line. That is detection only: a
  redactor built on it would then replace what it found, so this is its lower bound.

and reports, for each, the cost per line and per MB, and as a multiple of a baseline in
the same run (`json.dumps` of the same pieces: what writing them into a log entry costs
anyway); which of the corpus's secrets it hides (finds), and how many of the benign
lines it changes (flags): a false positive hides a run id or a checksum from the
operator who needs it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from secrets_corpus import CORPUS, LIVE_PASSWORD  # noqa: E402
from tradeul_maint.base import redact  # noqa: E402

BENIGN = [
    "2026-11-25T22:00:01.123Z loaded 152345 bars for 8123 symbols in 12.3s",
    "run_id=7f3c2a9e41d04b6f9a1c3e5d7b9f0a2c cycle 1 attempt 1",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  /data/flat/2026-11-25.csv.gz",
    "INSERT INTO ohlc (symbol, day, open, high, low, close) VALUES ('AAPL', '2026-11-25', 1, 2, 0.5, 1.5)",
    "deleted 40211 keys matching realtime:* (scanned 1200000 in 3.2s)",
    "uploaded s3://tradeul-archive/2026/11/25/bars.parquet (ETag \"9b2cf535f27731c974343645a3985328\")",
    "object id dGhpcyBpcyBqdXN0IGEgbG9uZyBiYXNlNjQgYmxvYiBvZiBub3RoaW5n in the cache",
    "tasks passed: 14, failed: 0, keys_deleted=40211, author=ops",
]


def output(size: int, seed: int = 1) -> tuple[str, int]:
    """About `size` bytes of task output, and its number of lines."""
    rng = random.Random(seed)
    secrets = [line for line, _ in CORPUS.values()]
    lines, total = [], 0
    while total < size:
        if rng.random() < 1 / 200:
            line = rng.choice(secrets)
        else:
            run_id = uuid.UUID(int=rng.getrandbits(128)).hex
            line = rng.choice(BENIGN).replace("7f3c2a9e41d04b6f9a1c3e5d7b9f0a2c", run_id)
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n", len(lines)


def best(repeat: int, work) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


PIECE = 64 * 1024


def tool_scrub(text: str) -> None:
    for start in range(0, len(text), PIECE):
        redact.scrub(text[start:start + PIECE])


def baseline(text: str) -> None:
    for start in range(0, len(text), PIECE):
        json.dumps({"output": text[start:start + PIECE]}, ensure_ascii=False)


def detect_secrets_plugins():
    try:
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
        from detect_secrets.settings import default_settings
    except ImportError:
        return None, None
    context = default_settings()
    context.__enter__()
    return [cls() for cls in get_mapping_from_secret_type_to_class().values()], context


def detect(plugins, line: str) -> set[str]:
    found = set()
    for plugin in plugins:
        for secret in plugin.analyze_line(filename="task-output.txt", line=line, line_number=0):
            found.add(secret.secret_value)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    redact.remember(LIVE_PASSWORD)
    text, count = output(int(args.mb * 1024 * 1024))
    mb = len(text) / 1024 / 1024
    print(f"task output: {mb:.1f} MB, {count} lines, python {sys.version.split()[0]}")

    base = best(args.repeat, lambda: baseline(text))
    print(f"json.dumps (base)   {base:7.2f} s  {base / count * 1e6:6.2f} us/line  {base / mb * 1e3:7.1f} ms/MB")
    seconds = best(args.repeat, lambda: tool_scrub(text))
    print(f"redact.scrub        {seconds:7.2f} s  {seconds / count * 1e6:6.2f} us/line  {seconds / mb * 1e3:7.1f} ms/MB"
          f"  {seconds / base:6.1f}x base")
    hidden = [name for name, (line, value) in CORPUS.items() if value not in redact.scrub(line)]
    changed = [line for line in BENIGN if redact.scrub(line) != line]
    print(f"  hides {len(hidden)}/{len(CORPUS)} of the corpus; changes {len(changed)}/{len(BENIGN)} benign lines")
    for name in CORPUS:
        if name not in hidden:
            print(f"  misses: {name}")

    plugins, _ = detect_secrets_plugins()
    if plugins is None:
        print("detect-secrets is not installed: pip install detect-secrets")
        return
    lines = text.splitlines()
    sample = lines[: max(1, len(lines) // 20)]  # a twentieth, scaled up: the full run takes minutes
    seconds = best(1, lambda: [detect(plugins, line) for line in sample]) * len(lines) / len(sample)
    print(f"detect-secrets      {seconds:7.2f} s  {seconds / count * 1e6:6.2f} us/line  {seconds / mb * 1e3:7.1f} ms/MB"
          f"  {seconds / base:6.1f}x base (measured on {len(sample)} lines, scaled)")
    found = [name for name, (line, value) in CORPUS.items()
             if any(value in s or s in value for s in detect(plugins, line))]
    flagged = [line for line in BENIGN if detect(plugins, line)]
    print(f"  finds {len(found)}/{len(CORPUS)} of the corpus; flags {len(flagged)}/{len(BENIGN)} benign lines")
    for name in CORPUS:
        if name not in found:
            print(f"  misses: {name}")
    for line in flagged:
        print(f"  flags: {line[:70]}")


if __name__ == "__main__":
    main()
