"""The run lock's lease, in one place: its length, its renewal, when it is in doubt, and its scripts.

The lock (state/lock.py) takes and renews it, every state write extends it (state/store.py), and the
run's supervisor watches it (supervisor/lease_watch.py) so that tasks are stopped before
a lease that stopped being renewed can pass to another runner. No Redis client and no
logging here: the cron tick's quick path imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lease:
    """The run lock's lease: renewed every third of its length, in doubt once half of it passed unrenewed."""

    seconds: float

    @property
    def ms(self) -> int:
        return max(100, int(self.seconds * 1000))

    @property
    def renew_every(self) -> float:
        return self.ms / 3000

    @property
    def in_doubt_after(self) -> float:
        """Seconds without a renewal after which the holder is taken to be paused or cut off."""
        return self.ms / 2000

    @property
    def margin(self) -> float:
        """Task processes are gone this long before a lease in doubt can end."""
        return min(1.0, self.ms / 10000)


RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# The lease as its holder's supervisor sees it: PTTL while the lock holds the token, -3 when it does not.
LEASE_LEFT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PTTL', KEYS[1]) end
return -3
"""
