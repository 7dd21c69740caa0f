"""One exception family for the core; the CLI alone turns them into exit codes.

Each class is a failure an operator can act on, and its message says what to fix.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_TASKS_FAILED = 1
EXIT_USAGE = 2
EXIT_CALENDAR_EXPIRED = 69
EXIT_INTERNAL = 70  # sysexits EX_SOFTWARE: a bug, reported in one line (traceback with -v)
EXIT_TEMPORARY = 75
EXIT_CONFIG = 78
# A run still going at [run] max_run_minutes, stopped and recorded as a signal would: timeout(1)'s code,
# which operators already read as "timed out".
EXIT_RUN_DEADLINE = 124
EXIT_SIGHUP = 129
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
SIGNAL_EXIT_CODES = {1: EXIT_SIGHUP, 2: EXIT_SIGINT, 15: EXIT_SIGTERM}  # by signal number: 128 + signum


class MaintError(Exception):
    """Base of every error the core raises on purpose."""

    exit_code = EXIT_TEMPORARY


class UsageError(MaintError):
    """Bad arguments: an invalid or future date, a date that is not a session, an unknown task."""

    exit_code = EXIT_USAGE


class ConfigError(MaintError):
    """The configuration cannot be used as written."""

    exit_code = EXIT_CONFIG


class CalendarExpiredError(MaintError):
    """The trading calendar ends before the current time: exchange-calendars must be upgraded."""

    exit_code = EXIT_CALENDAR_EXPIRED


class RedisUnavailableError(MaintError):
    """Redis cannot be reached or timed out; the next cron tick may succeed."""

    exit_code = EXIT_TEMPORARY


class KeyTypeError(ConfigError):
    """A key under the tool's prefix holds another Redis type: most likely another application shares the prefix."""

    def __init__(self, key: str, actual: str, expected: str):
        super().__init__(f"Redis key {key} is a {actual}, not the {expected} this tool keeps there: another "
                         "application may use the same prefix; set [redis] key_prefix to one of this tool's own "
                         "(or remove the key if it is left over)")
        self.key, self.actual, self.expected = key, actual, expected


class LockBusyError(MaintError):
    """Another runner holds the run lock."""

    exit_code = EXIT_TEMPORARY

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder or {}


class LockLostError(MaintError):
    """This runner's lease expired and another runner took the lock: it must stop writing."""

    exit_code = EXIT_TEMPORARY


class ForeignLockError(MaintError):
    """The lock key holds a value this tool did not write, or has no expiry: it would block every run forever."""

    exit_code = EXIT_TEMPORARY


class RedisRefusedWriteError(MaintError):
    """Redis refused a write for a reason of its own state (READONLY replica, OOM, NOREPLICAS): temporary."""

    exit_code = EXIT_TEMPORARY


class ReplicasInDoubtError(MaintError):
    """Fewer replicas than [redis] min_replicas acknowledged a write in time: it may not survive a failover."""

    exit_code = EXIT_TEMPORARY


class TaskProcessesLostError(MaintError):
    """The run's supervisor died under it (killed from outside): its tasks' state is left resumable."""

    exit_code = EXIT_TEMPORARY


class TaskLoadError(MaintError):
    """A `python` task's module does not import or its attribute is not a callable."""

    exit_code = EXIT_CONFIG


class EmbeddedRedisError(MaintError):
    """The embedded redis-server could not be started."""

    exit_code = EXIT_TEMPORARY
