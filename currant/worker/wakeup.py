"""LISTEN/NOTIFY wake-ups on a connection of their own.

Notifications are an optimisation, never the delivery path: the worker polls
anyway, so a notification lost while this connection was down costs at most
one poll interval. After every (re)connect the listener LISTENs first and then
asks for one claim, so nothing committed in between waits for the poll.

Payloads carry no job data: a queue name ("ready now"), ``queue@epoch`` (a job
becomes due then), or ``cancel:<id>``.
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
    ) -> None:
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
                        async for notify in conn.notifies(timeout=HEALTH_CHECK_AFTER):
                            self._dispatch(notify.payload)
                        # No notification for a while: prove the connection is alive.
                        await asyncio.wait_for(conn.execute("SELECT 1"), timeout=5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                self.connected.clear()
                log.warning("listener: connection lost (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _dispatch(self, payload: str) -> None:
        if payload.startswith("cancel:"):
            try:
                self.on_cancel(int(payload[7:]))
            except ValueError:
                log.warning("listener: ignoring malformed notification %r", payload[:100])
            return
        queue, at, due = payload.rpartition("@")
        if at:
            try:
                when = float(due)
            except ValueError:
                pass  # a queue name that contains "@"
            else:
                self.on_due(queue, when)
                return
        self.on_ready(payload)
