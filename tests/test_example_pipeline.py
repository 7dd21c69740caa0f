"""The example pipeline (examples/maint.toml + examples/pipeline.py) end to end, against references computed here.

The references do not call the example's code: the session dates are written out, the true
range and the averages are computed again below from what the loaders stored, and two
hand-made fixtures have answers worked out by hand.
"""

import datetime as dt
import json
import time

import pytest
import redis
from loguru import logger

from conftest import REPO, Project
from tradeul_maint.redisio.embedded import EmbeddedRedis
from tradeul_maint.run.tasks import TaskContext

SESSION = dt.date(2026, 11, 20)  # a Friday
NOW = "2026-11-21T12:00"
# The 15 weekdays ending with the session (ATR(14) needs 14 true ranges, so 15 bars), and the last 10.
ATR_DAYS = [f"2026-11-{d:02d}" for d in (2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20)]
RVOL_DAYS = ATR_DAYS[-10:]
TASKS = ["load_ohlc", "load_volume_slots", "calculate_atr", "calculate_rvol_averages", "clear_realtime_caches",
         "snapshot"]


@pytest.fixture
def example(project, monkeypatch):
    """Run from anywhere but the examples: `pipeline` is imported from the config file's directory."""
    monkeypatch.chdir(project.root)
    return project


@pytest.fixture
def pipeline(example, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    import examples.pipeline

    return examples.pipeline


def run_example(project: Project, *args: str):
    return project.cli("--config", str(REPO / "examples" / "maint.toml"), "run", "--date", SESSION.isoformat(),
                       "--now", NOW, *args)


def ctx_for(r_bytes, task: str) -> TaskContext:
    return TaskContext(date=SESSION, task=task, run_id="test", redis=r_bytes, logger=logger.bind(task=task))


@pytest.fixture
def rb(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def reference_atr(bars: list[list[float]]) -> float:
    """ATR(14), simple average of the true ranges, written out independently of the example."""
    ranges = []
    for i in range(1, len(bars)):
        high, low, prev_close = bars[i][1], bars[i][2], bars[i - 1][3]
        ranges.append(max(high - low, abs(high - prev_close), abs(low - prev_close)))
    assert len(ranges) == 14
    return sum(ranges) / 14


def test_example_pipeline_runs_end_to_end_with_reference_values(example, r):
    result = run_example(example)
    assert result.exit_code == 0, result.output
    doc = json.loads(r.get(f"maintenance:status:{SESSION}"))
    assert doc["tasks"] == {name: "completed" for name in TASKS} and doc["all_success"] is True
    details = doc["task_details"]
    assert details["load_ohlc"]["result"] == {"tickers": 8, "sessions": 15, "bars": 120}
    assert details["calculate_rvol_averages"]["result"] == {"tickers": 8, "slots": 78, "sessions": 10}
    assert details["clear_realtime_caches"]["result"] == {"keys_deleted": 16}
    assert details["snapshot"]["result"]["note"].startswith("skipped: persistence is disabled")  # the test Redis

    stored_atr = r.hgetall(f"example:atr:{SESSION}")
    assert len(stored_atr) == 8
    for ticker in ("AAPL", "NVDA", "SPY"):
        raw = r.hmget(f"example:bars:{ticker}", ATR_DAYS)
        bars = [[float(x) for x in bar.split(",")] for bar in raw]
        assert all(low <= min(o, c) <= max(o, c) <= high for o, high, low, c, _ in bars)
        assert float(stored_atr[ticker]) == pytest.approx(reference_atr(bars), abs=5e-5)

    for ticker in ("AAPL", "TSLA"):
        history = [r.hgetall(f"example:volume:{ticker}:{day}") for day in RVOL_DAYS]
        assert all(len(slots) == 78 for slots in history)
        averages = r.hgetall(f"example:rvol_avg:{ticker}:{SESSION}")
        assert len(averages) == 78 and {"09:30", "12:00", "15:55"} <= averages.keys()
        for slot in averages:
            expected = sum(int(h[slot]) for h in history) / 10
            assert float(averages[slot]) == pytest.approx(expected, abs=0.005)
        # The intraday U shape: the open and the close trade more than midday.
        assert float(averages["09:30"]) > float(averages["12:30"]) < float(averages["15:55"])

    assert r.keys("example:realtime:*") == []
    assert r.exists("example:bars:AAPL")


def test_synthetic_data_is_the_same_on_every_run(example, r):
    assert run_example(example).exit_code == 0
    first = r.hgetall("example:bars:MSFT"), r.hgetall(f"example:volume:MSFT:{SESSION}")
    r.flushall()
    assert run_example(example).exit_code == 0
    assert (r.hgetall("example:bars:MSFT"), r.hgetall(f"example:volume:MSFT:{SESSION}")) == first


def test_atr_matches_a_hand_computed_fixture(pipeline, rb, r):
    pipeline.load_ohlc(ctx_for(rb, "load_ohlc"))
    # (open, high, low, close, volume). True ranges: day 1 high-low = 3; day 2 gaps up, |high - prev close|
    # = |106 - 101| = 5; day 3 gaps down, |low - prev close| = |100 - 105| = 5; days 4-14 range 2 around
    # an unchanged close. ATR(14) = (3 + 5 + 5 + 11 * 2) / 14 = 35 / 14 = 2.5.
    hand = ["100,101,99,100,1000", "100,102,99,101,1000", "105,106,104,105,1000", "102,103,100,101,1000"]
    hand += ["101,102,100,101,1000"] * 11
    r.hset("example:bars:AAPL", mapping=dict(zip(ATR_DAYS, hand)))
    assert pipeline.calculate_atr(ctx_for(rb, "calculate_atr")) == {"success": True}
    assert float(r.hget(f"example:atr:{SESSION}", "AAPL")) == 2.5


def test_rvol_averages_match_a_hand_computed_fixture(pipeline, rb, r):
    pipeline.load_volume_slots(ctx_for(rb, "load_volume_slots"))
    # Day k of 10 (k = 1..10): every slot traded 1000 k shares except 09:30, which traded k * k.
    # Averages: 1000 * 55 / 10 = 5500, and (1 + 4 + ... + 100) / 10 = 385 / 10 = 38.5.
    for k, day in enumerate(RVOL_DAYS, start=1):
        slots = {slot: 1000 * k for slot in r.hkeys(f"example:volume:TSLA:{day}")}
        slots["09:30"] = k * k
        r.hset(f"example:volume:TSLA:{day}", mapping=slots)
    assert pipeline.calculate_rvol_averages(ctx_for(rb, "calculate_rvol_averages"))["success"] is True
    averages = r.hgetall(f"example:rvol_avg:TSLA:{SESSION}")
    assert float(averages.pop("09:30")) == 38.5
    assert {float(v) for v in averages.values()} == {5500.0} and len(averages) == 77


def test_calculations_fail_clearly_when_history_is_missing(pipeline, rb, r):
    pipeline.load_ohlc(ctx_for(rb, "load_ohlc"))
    pipeline.load_volume_slots(ctx_for(rb, "load_volume_slots"))
    r.hdel("example:bars:NVDA", "2026-11-12")
    r.delete("example:volume:SPY:2026-11-10")
    assert pipeline.calculate_atr(ctx_for(rb, "calculate_atr")) == {
        "success": False, "error": "no NVDA bar for 2026-11-12: run load_ohlc for that session"}
    assert pipeline.calculate_rvol_averages(ctx_for(rb, "calculate_rvol_averages")) == {
        "success": False, "error": "SPY has 0 of 78 volume slots on 2026-11-10: run load_volume_slots for that session"}


def test_quick_start_on_the_embedded_redis_takes_a_real_snapshot(example):
    embedded = Project(example.root, None)  # no Redis URL: the tool starts its own redis-server
    started = time.time()
    result = run_example(embedded)
    assert result.exit_code == 0, result.output
    assert "6/6 tasks completed" in result.stdout
    server = EmbeddedRedis(example.state_dir)
    client = redis.Redis(unix_socket_path=server.start(), decode_responses=True)
    try:
        doc = json.loads(client.get(f"maintenance:status:{SESSION}"))
        snapshot = doc["task_details"]["snapshot"]["result"]
        assert "note" not in snapshot and snapshot["waited_for_running_save"] is False
        # RDB times have one-second resolution.
        assert started - 1 <= dt.datetime.fromisoformat(snapshot["saved_at"]).timestamp() <= time.time()
        assert client.hlen(f"example:atr:{SESSION}") == 8
    finally:
        client.close()
        server.stop()
    assert (example.state_dir / "redis" / "dump.rdb").is_file()
