"""Live updates: one LISTEN connection per dashboard process, fanned out to
every open page as server-sent events.

The hub LISTENs on the app's channel: ``r:<queue>`` (jobs ready),
``d:<epoch>:<queue>`` (a job scheduled), ``c:<job id>`` (cancel requested).
Completions send no notification, so between notifications the same
connection reads a *pulse* every ``pulse_every`` seconds: one statement on
small tables (the id sequence, this minute's activity, the workers), never the
jobs table; a changed pulse counts as a change. Changes are merged and sent at
most once per ``debounce`` seconds, whatever the number of clients; each page
then fetches itself again (``static/live.js``), and the overview's counts come
from the shared cache (:mod:`currant.dashboard.cache`).

The hub runs only while someone watches: the first client starts it, and it
closes its connection ``linger`` seconds after the last one left. It needs no
ASGI lifespan, so the app works mounted in another framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import psycopg

from ..app import App
from ..backoff import Backoff

log = logging.getLogger("currant.dashboard")

KEEPALIVE = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
# A pulse unanswered this long means a dead (or half-open) connection: reconnect.
PULSE_TIMEOUT = 10.0


class Hub:
    def __init__(
        self,
        app: App,
        sql: Mapping[str, str],
        *,
        debounce: float = 1.0,
        pulse_every: float = 2.0,
        linger: float = 10.0,
    ) -> None:
        self.app = app
        self.sql = sql
        self.debounce = debounce
        self.pulse_every = pulse_every
        self.linger = linger
        self.version = 0  # bumped by every broadcast
        self.listening = asyncio.Event()  # set while LISTEN is active (tests wait for it)
        self.clients = 0
        self._changed = asyncio.Event()  # replaced by every broadcast: waiters hold the old one
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[str, set[str]] = {"queues": set(), "jobs": set()}
        self._dirty = False
        self._last_sent = 0.0
        self._pulse: tuple[Any, ...] | None = None
        self._last_client_left = 0.0
        self._last_payload: dict[str, Any] = {}

    # -- clients ---------------------------------------------------------------

    async def events(self) -> AsyncIterator[bytes]:
        """An SSE stream: a ``change`` event after every (debounced) change."""
        self.clients += 1
        self._ensure_running()
        try:
            yield b"retry: 3000\n: connected\n\n"
            while True:
                waiter = self._changed
                seen = self.version
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waiter.wait(), KEEPALIVE)
                if self.version == seen:
                    yield b": keepalive\n\n"
                    continue
                yield f"event: change\ndata: {json.dumps(self._last_payload)}\n\n".encode()
        finally:
            self.clients -= 1
            self._last_client_left = time.monotonic()

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="currant-dashboard-hub")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the LISTEN connection -------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff()
        while not self._idle_long_enough():
            try:
                dsn = await asyncio.to_thread(lambda: self.app.dsn)
                conn = await psycopg.AsyncConnection.connect(
                    dsn,
                    autocommit=True,
                    application_name="currant-dashboard",
                    connect_timeout=max(2, int(self.app.connect_timeout)),
                )
                async with conn:
                    # The channel is "currant_<schema>", and the schema name was validated.
                    await conn.execute(f'LISTEN "{self.app.channel}"')
                    self.listening.set()
                    backoff.reset()
                    await self._serve(conn)
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect with backoff
                log.warning("dashboard: live updates lost their connection (%s); reconnecting", type(exc).__name__)
                await backoff.wait()
            finally:
                self.listening.clear()

    def _idle_long_enough(self) -> bool:
        return self.clients == 0 and time.monotonic() - self._last_client_left > self.linger

    async def _serve(self, conn: psycopg.AsyncConnection[Any]) -> None:
        next_pulse = 0.0
        while not self._idle_long_enough():
            now = time.monotonic()
            if now >= next_pulse:
                await asyncio.wait_for(self._read_pulse(conn), PULSE_TIMEOUT)
                next_pulse = now + self.pulse_every
            self._maybe_broadcast()
            wait = next_pulse - time.monotonic()
            if self._dirty:
                wait = min(wait, self._last_sent + self.debounce - time.monotonic())
            # One notification is enough to act on: the loop comes back at once
            # and sends it (or waits out the debounce, merging the others).
            async for notify in conn.notifies(timeout=max(0.01, wait), stop_after=1):
                self._note(notify.payload)

    async def _read_pulse(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute(self.sql["dash_pulse"])
        row = await cur.fetchone()
        pulse = tuple(row[:5]) if row else None  # the last column is the clock: not a change
        if self._pulse is not None and pulse != self._pulse:
            self._dirty = True
        self._pulse = pulse

    def _note(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        if kind == "r":
            self._pending["queues"].add(rest)
        elif kind == "d":
            self._pending["queues"].add(rest.partition(":")[2])
        elif kind == "c":
            self._pending["jobs"].add(rest)
        self._dirty = True

    def _maybe_broadcast(self) -> None:
        if not self._dirty or time.monotonic() - self._last_sent < self.debounce:
            return
        self._last_payload = {"v": self.version + 1, **{k: sorted(v)[:50] for k, v in self._pending.items()}}
        self._pending = {"queues": set(), "jobs": set()}
        self._dirty = False
        self._last_sent = time.monotonic()
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
