"""The one backoff policy: every retry loop in Currant waits by this.

Exponential, from ``first`` doubling to ``cap``, reset by the caller after a
success. A worker's connections, its LISTEN loop and the supervisor's restarts
all use it, so "how fast do we hammer a database (or respawn a child) that is
not there" is decided here and nowhere else.
"""

from __future__ import annotations

import asyncio
import time

# A database that is down is asked again after 50 ms, then ever more slowly,
# never less often than every 5 s: fast enough to notice a restart at once,
# slow enough that a thousand workers do not flood a recovering server.
FIRST_DELAY = 0.05
MAX_DELAY = 5.0


class Backoff:
    """Delays of a retry loop: ``first``, doubling, capped at ``cap``."""

    __slots__ = ("first", "cap", "delay", "failures")

    def __init__(self, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"need 0 < first ({first}) <= cap ({cap})")
        self.first = first
        self.cap = cap
        self.delay = first
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next try; the one after it will be longer."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """After a success: the next failure waits ``first`` again."""
        self.delay = self.first
        self.failures = 0

    async def wait(self) -> float:
        """Sleep for the next delay (asyncio); returns how long."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

    def wait_sync(self) -> float:
        """Sleep for the next delay (blocking); returns how long."""
        delay = self.next_delay()
        time.sleep(delay)
        return delay
