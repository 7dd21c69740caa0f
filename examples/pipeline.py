"""The platform's end-of-day pipeline in miniature: real computations on synthetic market data in Redis.

load_ohlc -> calculate_atr and load_volume_slots -> calculate_rvol_averages, computed as
the production tasks compute them, on data made up deterministically from (ticker, date),
so a run takes a second anywhere and tests can check the numbers. The history before the
session is synthetic too: the preceding sessions are taken to be the preceding weekdays
(holidays included), which is all the example needs; real tasks read the dates their
database holds. Each loader writes the session and the history its calculation needs, as
a first run of a real loader backfills, so any single session runs on an empty Redis.

Keys, all under `example:`:
    example:bars:<TICKER>               hash date -> "open,high,low,close,volume"
    example:atr:<date>                  hash ticker -> ATR(14) as of that session
    example:volume:<TICKER>:<date>      hash "HH:MM" (slot start) -> shares traded in that 5-minute slot
    example:rvol_avg:<TICKER>:<date>    hash "HH:MM" -> average slot volume over the RVOL_SESSIONS sessions
                                        ending on date (what the next session's live RVOL divides by)
    example:realtime:*                  what the intraday services leave behind; cleared at the end of day
"""

from __future__ import annotations

import datetime as dt
import math
import random

TICKERS = ("AAPL", "AMD", "AMZN", "MSFT", "NVDA", "QQQ", "SPY", "TSLA")
BASE_PRICE = {"AAPL": 230.0, "AMD": 160.0, "AMZN": 210.0, "MSFT": 420.0, "NVDA": 135.0, "QQQ": 500.0,
              "SPY": 590.0, "TSLA": 340.0}
DAILY_VOLUME = {"AAPL": 52e6, "AMD": 38e6, "AMZN": 41e6, "MSFT": 21e6, "NVDA": 240e6, "QQQ": 35e6,
                "SPY": 60e6, "TSLA": 95e6}
ATR_PERIOD = 14  # ATR(14): the simple average of the last 14 true ranges (not Wilder's smoothing)
RVOL_SESSIONS = 10
# The 78 five-minute slots of a regular session, 09:30 to 15:55 (start times).
SLOTS = tuple(f"{9 + (30 + 5 * i) // 60:02d}:{(30 + 5 * i) % 60:02d}" for i in range(78))


# --- synthetic history ---------------------------------------------------------------------


def sessions_ending(session: dt.date, count: int) -> list[dt.date]:
    """`count` weekdays ending with `session`, oldest first: the example's stand-in for a calendar."""
    days: list[dt.date] = []
    day = session
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day -= dt.timedelta(days=1)
    return days[::-1]


def daily_bar(ticker: str, day: dt.date) -> tuple[float, float, float, float, int]:
    """(open, high, low, close, volume), the same for a (ticker, date) on every machine and every run.

    A slow swing shared by consecutive days keeps closes near the next day's open, as in a
    real series; the day's own noise comes from a generator seeded with the ticker and date.
    """
    rng = random.Random(f"{ticker}:{day.isoformat()}")
    phase = sum(map(ord, ticker))
    mid = BASE_PRICE[ticker] * (1 + 0.08 * math.sin(day.toordinal() / 11 + phase))
    open_ = mid * (1 + rng.uniform(-0.01, 0.01))
    close = mid * (1 + rng.uniform(-0.015, 0.015))
    high = max(open_, close) * (1 + rng.uniform(0, 0.012))
    low = min(open_, close) * (1 - rng.uniform(0, 0.012))
    return round(open_, 2), round(high, 2), round(low, 2), round(close, 2), int(DAILY_VOLUME[ticker] *
                                                                              rng.uniform(0.6, 1.5))


def volume_slots(ticker: str, day: dt.date) -> dict[str, int]:
    """Shares traded per 5-minute slot: the intraday U shape (busy open and close) times the day's noise."""
    rng = random.Random(f"{ticker}:{day.isoformat()}:slots")
    middle = (len(SLOTS) - 1) / 2
    profile = [1 + 2.5 * ((i - middle) / middle) ** 2 for i in range(len(SLOTS))]
    scale = DAILY_VOLUME[ticker] * rng.uniform(0.7, 1.4) / sum(profile)
    return {slot: int(scale * weight * rng.uniform(0.6, 1.4)) for slot, weight in zip(SLOTS, profile)}


def bars_key(ticker: str) -> str:
    return f"example:bars:{ticker}"


def atr_key(session: dt.date) -> str:
    return f"example:atr:{session.isoformat()}"


def volume_key(ticker: str, day: dt.date) -> str:
    return f"example:volume:{ticker}:{day.isoformat()}"


def rvol_key(ticker: str, session: dt.date) -> str:
    return f"example:rvol_avg:{ticker}:{session.isoformat()}"


# --- the tasks -----------------------------------------------------------------------------


def load_ohlc(ctx) -> None:
    """Store the daily bars of the session and of the sessions ATR(14) needs before it, as if downloaded."""
    days = sessions_ending(ctx.date, ATR_PERIOD + 1)
    pipe = ctx.redis.pipeline(transaction=False)
    for ticker in TICKERS:
        pipe.hset(bars_key(ticker), mapping={day.isoformat(): ",".join(map(str, daily_bar(ticker, day)))
                                             for day in days})
    pipe.execute()
    ctx.logger.bind(tickers=len(TICKERS), sessions=len(days)).info("bars_loaded")
    ctx.report(tickers=len(TICKERS), sessions=len(days), bars=len(TICKERS) * len(days))


def true_ranges(bars: list[tuple[float, float, float, float]]) -> list[float]:
    """max(high - low, |high - previous close|, |low - previous close|) for every bar after the first."""
    return [max(high - low, abs(high - prev[3]), abs(low - prev[3]))
            for prev, (_, high, low, _) in zip(bars, bars[1:])]


def calculate_atr(ctx) -> dict:
    """ATR(14) per ticker as of the session, from the stored bars; fails like the existing task classes do."""
    days = sessions_ending(ctx.date, ATR_PERIOD + 1)
    fields = [day.isoformat() for day in days]
    pipe = ctx.redis.pipeline(transaction=False)
    for ticker in TICKERS:
        pipe.hmget(bars_key(ticker), fields)
    atr: dict[str, float] = {}
    for ticker, stored in zip(TICKERS, pipe.execute()):
        if None in stored:
            missing = fields[stored.index(None)]
            return {"success": False, "error": f"no {ticker} bar for {missing}: run load_ohlc for that session"}
        bars = [tuple(float(x) for x in raw.decode().split(",")[:4]) for raw in stored]
        atr[ticker] = round(sum(true_ranges(bars)[-ATR_PERIOD:]) / ATR_PERIOD, 4)
    ctx.redis.hset(atr_key(ctx.date), mapping=atr)
    ctx.logger.bind(tickers=len(atr)).info("atr_calculated")
    ctx.report(tickers=len(atr))
    return {"success": True}


def load_volume_slots(ctx) -> None:
    """Store the 5-minute volume slots of the session and of the sessions the RVOL averages need."""
    days = sessions_ending(ctx.date, RVOL_SESSIONS)
    pipe = ctx.redis.pipeline(transaction=False)
    for ticker in TICKERS:
        for day in days:
            pipe.hset(volume_key(ticker, day), mapping=volume_slots(ticker, day))
    pipe.execute()
    leave_intraday_caches(ctx)
    ctx.logger.bind(tickers=len(TICKERS), sessions=len(days), slots=len(SLOTS)).info("volume_slots_loaded")
    ctx.report(tickers=len(TICKERS), sessions=len(days), slots=len(TICKERS) * len(days) * len(SLOTS))


def leave_intraday_caches(ctx) -> None:
    """What the realtime services would have cached during the session, for clear_realtime_caches to reset.

    In production those services write these keys all day; the example has no services, so
    the volume loader stands in for them.
    """
    pipe = ctx.redis.pipeline(transaction=False)
    for ticker in TICKERS:
        slots = volume_slots(ticker, ctx.date)
        pipe.set(f"example:realtime:volume:{ticker}", sum(slots.values()))
        pipe.set(f"example:realtime:quote:{ticker}", daily_bar(ticker, ctx.date)[3])
    pipe.execute()


class CalculateRvolAveragesTask:
    """Per-slot average volume over the last RVOL_SESSIONS sessions, per ticker.

    Written the way the replaced service wrote its tasks, constructed with (redis, db) and
    run with `execute(target_date)` returning `{"success": bool, ...}`, to show that such a
    class plugs in unchanged through `legacy_task` below. `db` (the service's database
    client) is not used here.
    """

    def __init__(self, redis_client, db=None):
        self.redis = redis_client
        self.db = db

    def execute(self, target_date: dt.date) -> dict:
        days = sessions_ending(target_date, RVOL_SESSIONS)
        pipe = self.redis.pipeline(transaction=False)
        for ticker in TICKERS:
            for day in days:
                pipe.hgetall(volume_key(ticker, day))
        replies = iter(pipe.execute())
        averages: dict[str, dict[str, float]] = {}
        for ticker in TICKERS:
            history = [next(replies) for _ in days]
            for day, slots in zip(days, history):
                if len(slots) != len(SLOTS):
                    return {"success": False, "error": f"{ticker} has {len(slots)} of {len(SLOTS)} volume slots on "
                                                       f"{day}: run load_volume_slots for that session"}
            averages[ticker] = {slot: round(sum(int(h[slot.encode()]) for h in history) / len(days), 2)
                                for slot in SLOTS}
        pipe = self.redis.pipeline(transaction=False)
        for ticker, by_slot in averages.items():
            pipe.hset(rvol_key(ticker, target_date), mapping=by_slot)
        pipe.execute()
        return {"success": True, "tickers": len(averages), "slots": len(SLOTS), "sessions": len(days)}


def legacy_task(task_class, db=None):
    """Adapter: an existing `Task(redis, db).execute(date)` class as a tradeul-maint Python task."""
    def run(ctx):
        return task_class(ctx.redis, db).execute(ctx.date)
    return run


calculate_rvol_averages = legacy_task(CalculateRvolAveragesTask)
