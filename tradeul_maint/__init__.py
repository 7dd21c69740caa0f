"""tradeul-maint: end-of-day maintenance, exactly once per exchange trading session."""

__version__ = "0.1.0"
