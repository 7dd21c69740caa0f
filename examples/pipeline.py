"""A tiny end-of-day pipeline for the quick start: runs anywhere in a second, on the maintenance Redis."""

from __future__ import annotations

import random

TICKERS = ("AAPL", "MSFT", "NVDA", "SPY")


def load_ohlc(ctx):
    """Store a deterministic daily bar per ticker for the session (as if downloaded)."""
    rng = random.Random(ctx.date.toordinal())
    for ticker in TICKERS:
        close = round(100 + rng.random() * 50, 2)
        ctx.redis.hset(f"example:ohlc:{ticker}", ctx.date.isoformat(), close)
    ctx.logger.info("bars_loaded", tickers=len(TICKERS))
    ctx.report(bars=len(TICKERS))


def calculate_summary(ctx):
    """Average close per ticker over the stored sessions; fails like the existing task classes do."""
    averages = {}
    for ticker in TICKERS:
        closes = [float(v) for v in ctx.redis.hvals(f"example:ohlc:{ticker}")]
        if not closes:
            return {"success": False, "error": f"no bars for {ticker}"}
        averages[ticker] = round(sum(closes) / len(closes), 2)
    ctx.redis.hset("example:summary", mapping=averages)
    return {"success": True, "tickers": len(averages)}
