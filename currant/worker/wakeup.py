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

from .. import faults
from ..backoff import Backoff
from .links import GaveUp, Link

log = logging.getLogger("currant.worker")


class Listener:
    """LISTENs on the app's channel and turns notifications into calls.

    Silence longer than the link's round-trip timeout makes it check its
    connection with ``health_check``, so a half-open TCP connection is found
    and replaced; the query also says whether jobs are ready, and so doubles
    as that moment's fallback poll.
    """

    def __init__(
        self,
        link: Link,
        channel: str,
        on_ready: Callable[[str], None],
        on_due: Callable[[str, float], None],
        on_cancel: Callable[[int], None],
        on_connected: Callable[[], None],
        health_check: tuple[str, dict[str, Any]] = ("SELECT false", {}),
        on_health: Callable[[bool], None] = lambda ready: None,
    ) -> None:
        self.link = link
        self.channel = channel
        self.on_ready = on_ready
        self.on_due = on_due
        self.on_cancel = on_cancel
        self.on_connected = on_connected
        self.health_check = health_check
        self.on_health = on_health
        self.connected = asyncio.Event()

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            conn = await self.link.connection()
            try:
                faults.point("listener_reconnect")
                await conn.execute(f'LISTEN "{self.channel}"')
                backoff.reset()
                self.link.mark_up()
                self.connected.set()
                self.on_connected()
                while True:
                    async for notify in conn.notifies(timeout=self.link.timeout):
                        self._dispatch(notify.payload)
                    # No notification for a while: prove the connection is alive
                    # (the query also tells whether work is waiting).
                    cur = await asyncio.wait_for(conn.execute(*self.health_check), timeout=min(5.0, self.link.timeout))
                    row = await cur.fetchone()
                    self.on_health(bool(row and row[0]))
            except (asyncio.CancelledError, GaveUp):
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                self.connected.clear()
                self.link.mark_down(exc)
                await self.link.drop(siblings=False)
                await backoff.wait()

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
