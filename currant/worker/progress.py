"""Progress reports of running jobs, from any lane to the database, throttled.

``JobContext.progress()`` may be called in a tight loop: each call only
replaces the job's latest report in memory (under a lock, from any thread).
The loop writes the latest reports of all jobs in one statement at most once
a second, on the claims connection (shared with the claimer and the
heartbeat); a report not written because the database was away is
overwritten by the next one, which is all that matters.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from typing import Any

from ..job import JobContext
from .links import Connection, Link, LinkDown
from .state import WorkerState

log = logging.getLogger("currant.worker")

# At most one write per this many seconds (for all jobs of this worker).
INTERVAL = 1.0


class ProgressReports:
    def __init__(self, state: WorkerState, link: Link, sql: dict[str, str], loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.link = link
        self.sql = sql
        self.loop = loop
        self._latest: dict[int, tuple[int, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._pending = asyncio.Event()

    def report(self, job: JobContext, values: dict[str, Any]) -> None:
        """Any thread: keep this report as the job's latest."""
        with self._lock:
            first = not self._latest
            self._latest[job.id] = (job.attempt, values)
        if first:
            self.loop.call_soon_threadsafe(self._pending.set)

    async def run(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            with self._lock:
                taken, self._latest = self._latest, {}
            params = {
                "ids": list(taken),
                "attempts": [attempt for attempt, _ in taken.values()],
                "reports": [json.dumps(values) for _, values in taken.values()],
                "worker": self.state.worker_id,
            }

            try:
                await self.link.once(functools.partial(self._write, params=params))
            except LinkDown as exc:
                log.debug("progress reports not written (%s); the next ones will be", exc)
            await asyncio.sleep(INTERVAL)

    async def _write(self, conn: Connection, params: dict[str, Any]) -> None:
        await conn.execute(self.sql["record_progress"], params)
