"""Periodic (cron) jobs, leader-free: every worker may try, exactly one wins each tick.

Each schedule has a row in ``periodic`` holding the last tick enqueued. A
worker that sees a tick due runs a compare-and-set on that row and, in the same
transaction, enqueues the job; any other worker's CAS for the same tick
changes nothing. Ticks are cron times in UTC on the database clock.

Missed ticks: when no worker ran through several ticks, the next worker
enqueues the most recent missed tick once and skips the older ones (a backlog
of identical periodic jobs helps nobody). A schedule seen for the first time
starts from now.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from croniter import croniter

from ..plans import arun_plan
from .links import Connection, Link

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("currant.cron")

# Fire a little after the tick so the database clock has surely passed it.
_FIRE_SLACK = 0.01


class CronScheduler:
    def __init__(self, app: App, link: Link) -> None:
        self.app = app
        self.link = link  # shared with other round trips: each of ours goes through it whole
        self.last_tick: dict[str, datetime] = {}

    async def register(self) -> None:
        await self.link.once(self._register)

    async def _register(self, conn: Connection) -> None:
        for periodic in self.app.periodics.values():
            await conn.execute(
                self.app.sql["periodic_register"], {"name": periodic.name, "schedule": periodic.schedule}
            )
        cur = await conn.execute(self.app.sql["periodic_last"], {"names": list(self.app.periodics)})
        for name, last_tick, _db_now in await cur.fetchall():
            self.last_tick[name] = last_tick

    def next_wake(self, clock_offset: float) -> float:
        """Monotonic time of the earliest upcoming tick."""
        db_now = datetime.fromtimestamp(time.time() + clock_offset, timezone.utc)
        soonest = min(
            croniter(periodic.schedule, max(db_now, self.last_tick.get(name, db_now))).get_next(datetime)
            for name, periodic in self.app.periodics.items()
        )
        return float(time.monotonic() + (soonest - db_now).total_seconds() + _FIRE_SLACK)

    async def fire_due(self, clock_offset: float) -> int:
        """Enqueue every tick that is due and not yet taken; returns how many this worker took."""
        db_now = datetime.fromtimestamp(time.time() + clock_offset, timezone.utc)
        seen: dict[str, datetime] = {}
        taken = await self.link.once(lambda conn: self._fire(conn, db_now, seen))
        # Only once the round trip has committed: through a pooler it is one
        # transaction, and a tick noted before a rollback would never be retried.
        self.last_tick.update(seen)
        return taken

    async def _fire(self, conn: Connection, db_now: datetime, seen: dict[str, datetime]) -> int:
        taken = 0
        for name, periodic in self.app.periodics.items():
            due = croniter(periodic.schedule, db_now + timedelta(microseconds=1)).get_prev(datetime)
            last = self.last_tick.get(name)
            if last is not None and due <= last:
                continue
            async with conn.transaction():
                cur = await conn.execute(self.app.sql["periodic_take"], {"name": name, "tick": due})
                won = await cur.fetchone() is not None
                if won:
                    job_id = await arun_plan(conn, self.app.enqueue_plan(periodic.task, periodic.args, periodic.kwargs))
                    log.info("periodic %s: enqueued job %s for tick %s", name, job_id, due.isoformat())
                    taken += 1
            seen[name] = due
        return taken
