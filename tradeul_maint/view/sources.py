"""Where a command reads from and writes to: the config file, the Redis, the log directory.

`status`, `calendar` and `check` say these first, because an empty or odd view is most often
the right command pointed at the wrong place: another config file, the embedded Redis of
this machine instead of the shared one, a log directory that fell back. Plain values, for
the tables and the `--json` documents alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tradeul_maint.config.load import searched
from tradeul_maint.config.settings import Settings
from tradeul_maint.redisio.connection import redact
from tradeul_maint.redisio.embedded import EmbeddedRedis


@dataclass(frozen=True)
class Sources:
    """Which configuration and which Redis a command reads: the first thing to check when a view looks empty."""

    config: str | None  # the config file, None when none was found
    redis: str  # the URL with its password hidden, or "embedded Redis in DIR" (as connection.open_redis says)
    embedded: bool
    searched: str  # where a config file was looked for

    @property
    def warning(self) -> str | None:
        """An embedded Redis without a config file is most likely not the Redis the operator meant."""
        if not self.embedded or self.config is not None:
            return None
        return (f"no config file found (looked for {self.searched}) and no Redis URL given: this is the "
                f"{self.redis}, not a shared one; give --config or --redis-url")

    def to_json(self) -> dict:
        return {"config": self.config, "redis": self.redis}


@dataclass(frozen=True)
class LogPlace:
    """Where this command's log entries go, and why not where the settings point when it fell back."""

    path: Path
    preferred: Path
    fallback_reason: str | None = None

    def to_json(self) -> dict:
        return {"log_dir": str(self.path),
                "log_dir_fallback": None if self.fallback_reason is None else
                {"preferred": str(self.preferred), "reason": self.fallback_reason}}


def sources(settings: Settings) -> Sources:
    url = settings.redis.url
    where = redact(url) if url else f"embedded Redis in {EmbeddedRedis(settings.state_dir).dir}"
    config = str(settings.config_path.resolve()) if settings.config_path else None
    return Sources(config, where, url is None, searched())
