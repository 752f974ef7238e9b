"""A short-lived, shared memory of expensive reads.

Whatever must touch many rows (the overview's state counts) is read at most
once per ``ttl`` seconds per dashboard process, however many people look and
however often their pages refresh: concurrent requests for a key that is
being computed wait for that one computation instead of starting their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


class TTLCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[float, Any]] = {}
        self._pending: dict[str, asyncio.Future[Any]] = {}

    async def get(self, key: str, ttl: float, compute: Callable[[], Awaitable[Any]]) -> Any:
        """The value computed for ``key`` less than ``ttl`` seconds ago, else a fresh one."""
        held = self._values.get(key)
        if held is not None and self._clock() - held[0] < ttl:
            return held[1]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            value = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._pending[key]
        self._values[key] = (self._clock(), value)
        future.set_result(value)
        return value

    def age(self, key: str) -> float | None:
        """Seconds since ``key`` was computed, or None."""
        held = self._values.get(key)
        return None if held is None else self._clock() - held[0]

    def clear(self) -> None:
        self._values.clear()
