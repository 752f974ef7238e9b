"""LISTEN/NOTIFY wake-ups on a connection of their own.

Notifications are an optimisation, never the delivery path: the worker polls
anyway, so a notification lost while this connection was down costs at most
one poll interval. After every (re)connect the listener LISTENs first and then
asks for one claim, so nothing committed in between waits for the poll.

Payloads carry no job data and cannot be confused whatever a queue is called:
``r:<queue>`` (jobs ready now), ``d:<epoch>:<queue>`` (a job becomes due
then), ``c:<job id>`` (cancel requested).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from .. import faults

log = logging.getLogger("currant.worker")

# Silence longer than this makes the listener check its connection with a
# query, so a half-open TCP connection is found and replaced.
HEALTH_CHECK_AFTER = 30.0


class Listener:
    def __init__(
        self,
        dsn: str,
        channel: str,
        connect_kwargs: dict[str, Any],
        on_ready: Callable[[str], None],
        on_due: Callable[[str, float], None],
        on_cancel: Callable[[int], None],
        on_connected: Callable[[], None],
        health_check: tuple[str, dict[str, Any]] = ("SELECT false", {}),
        on_health: Callable[[bool], None] = lambda ready: None,
        health_check_after: float = HEALTH_CHECK_AFTER,
    ) -> None:
        self.health_check = health_check
        self.on_health = on_health
        self.health_check_after = health_check_after
        self.dsn = dsn
        self.channel = channel
        self.connect_kwargs = connect_kwargs
        self.on_ready = on_ready
        self.on_due = on_due
        self.on_cancel = on_cancel
        self.on_connected = on_connected
        self.connected = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.05
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, **self.connect_kwargs)
            except (psycopg.OperationalError, OSError) as exc:
                log.warning("listener: cannot connect (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                async with conn:
                    faults.point("listener_reconnect")
                    await conn.execute(f'LISTEN "{self.channel}"')
                    backoff = 0.05
                    self.connected.set()
                    self.on_connected()
                    while True:
                        async for notify in conn.notifies(timeout=self.health_check_after):
                            self._dispatch(notify.payload)
                        # No notification for a while: prove the connection is alive
                        # (the query also tells whether work is waiting).
                        cur = await asyncio.wait_for(
                            conn.execute(*self.health_check), timeout=min(5.0, self.health_check_after)
                        )
                        row = await cur.fetchone()
                        self.on_health(bool(row and row[0]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                self.connected.clear()
                log.warning("listener: connection lost (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _dispatch(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        try:
            if kind == "r":
                self.on_ready(rest)
            elif kind == "d":
                when, _, queue = rest.partition(":")
                self.on_due(queue, float(when))
            elif kind == "c":
                self.on_cancel(int(rest))
            else:
                raise ValueError(kind)
        except ValueError:
            log.warning("listener: ignoring malformed notification %r", payload[:100])
