"""Upkeep: registration, the heartbeat and everything that rides on it, and lease loss.

One statement per heartbeat (``maintain`` in the migrations) does the
worker's whole periodic duty: it proves the worker alive, promotes due
scheduled and retrying jobs, and, for whichever worker gets the advisory lock,
rescues dead workers' jobs and prunes finished ones past retention. Its answer
says whether jobs are ready, when the next one is due, which held jobs were
cancelled, and what the database clock reads. Between heartbeats the loop
wakes early for a job that becomes due, and for periodic (cron) ticks.

The heartbeat goes on whatever fails: a worker whose heartbeat stopped would
be declared dead while it works. If the worker was declared dead anyway (it
was cut off past ``dead_after``), its jobs were rescued: it drops what it
prefetched and registers anew.

It shares the claims link (one round trip at a time): a worker process
holds two connections. ``maintain()`` carries its own planner settings
(migration 0008), so the work connection's (see
:data:`~currant.worker.links.WORK_CONNECTION_OPTIONS`) do not reach it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import psycopg

from .. import archive, faults
from ..backoff import Backoff
from ..plans import arun_plan
from .config import WorkerConfig
from .lanes import Lanes
from .links import Connection, GaveUp, Link, LinkDown
from .state import WorkerState

if TYPE_CHECKING:
    from ..app import App
    from .cron import CronScheduler

log = logging.getLogger("currant.worker")

# Never faster than this: a due job another worker is promoting right now
# must not make the loop spin.
MIN_ROUND = 0.05


class Upkeep:
    def __init__(self, app: App, state: WorkerState, config: WorkerConfig, lanes: Lanes, link: Link) -> None:
        self.app = app
        self.state = state
        self.config = config
        self.lanes = lanes
        self.link = link
        self.sql = app.sql
        self.cron: CronScheduler | None = None
        if app.periodics:
            from .cron import CronScheduler  # croniter only for apps with schedules: start-up time

            self.cron = CronScheduler(app, link)
        self._reregistering = False
        self._next_rotation = 0.0  # monotonic time of the next archive rotation: the first heartbeat's
        self._rotation_period = config.heartbeat * archive.ROTATE_EVERY_BEATS
        self._rotation_failed = False

    async def register(self) -> None:
        async def insert(conn: Connection) -> int:
            cur = await conn.execute(
                self.sql["register_worker"],
                {
                    "hostname": socket.gethostname(),
                    "pid": os.getpid(),
                    "queues": self.config.queues,
                    "concurrency": self.config.concurrency,
                },
            )
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

        self.state.worker_id = await self.link.run(insert)

    async def run(self) -> None:
        state, cron = self.state, self.cron
        cron_ready = False
        # With periodic tasks, the first round (which registers them) runs at once.
        state.next_beat = time.monotonic() + (0.0 if cron is not None else self.config.heartbeat)
        last_beat = 0.0
        not_before = 0.0  # after a failed round: the backoff
        failures = Backoff()
        while True:
            now = time.monotonic()
            wake_at = state.next_beat
            if state.next_due is not None:
                wake_at = min(wake_at, now + max(0.0, state.next_due - state.db_now()))
            if cron is not None and cron_ready:
                wake_at = min(wake_at, cron.next_wake(state.clock_offset))
            wake_at = max(wake_at, last_beat + MIN_ROUND, not_before)
            state.due_changed.clear()
            try:
                await asyncio.wait_for(state.due_changed.wait(), max(0.0, wake_at - now))
                continue  # re-arm with the new due time
            except asyncio.TimeoutError:
                pass
            last_beat = time.monotonic()
            try:
                await self.beat()
                if last_beat >= self._next_rotation:
                    await self.rotate_archive()
                if cron is not None:
                    if not cron_ready:
                        await asyncio.wait_for(cron.register(), self.link.timeout)
                        cron_ready = True
                    await asyncio.wait_for(cron.fire_due(state.clock_offset), self.link.timeout)
                failures.reset()
                not_before = 0.0
            except GaveUp:
                raise
            except Exception:  # the heartbeat must go on
                delay = failures.next_delay()
                not_before = time.monotonic() + delay
                if failures.failures == 1:
                    log.exception("maintenance failed; retrying with backoff")
                else:
                    log.error(
                        "maintenance failed again (%d times in a row); next try in %.1f s",
                        failures.failures,
                        delay,
                        exc_info=log.isEnabledFor(logging.DEBUG),
                    )
            state.next_beat = last_beat + self.config.heartbeat

    async def beat(self) -> dict[str, Any] | None:
        """One heartbeat; returns its row, or None if the database could not be reached."""
        state, config = self.state, self.config
        self.lanes.refresh_hooks()  # a hook that was idle (tracing before its SDK was set) may be awake now
        params = {
            "worker": state.worker_id,
            "queues": config.queues,
            "running": list(state.held),
            "dead_after": config.dead_after,
            "max_rescues": config.max_rescues,
            "keep_succeeded": config.keep_succeeded,
            "keep_failed": config.keep_failed,
            "prune_batch": config.prune_batch,
            "channel": self.app.channel,
        }
        report = state.tally.take_unreported()
        params.update(report)

        async def maintain(conn: Connection) -> dict[str, Any]:
            faults.point("rescue_sweep")
            cur = await conn.execute(self.sql["maintain"], params, prepare=True)
            values = await cur.fetchone()
            assert values is not None and cur.description is not None
            return dict(zip((column.name for column in cur.description), values, strict=True))

        try:
            row = await self.link.once(maintain)
        except LinkDown as exc:
            state.tally.give_back(report)
            log.warning("heartbeat failed (%s); will retry", exc)
            return None
        except BaseException:
            state.tally.give_back(report)  # not recorded: it goes with the next heartbeat
            raise
        state.clock_offset = row["db_now"].timestamp() - time.time()
        state.next_due = row["next_due"].timestamp() if row["next_due"] is not None else None
        if row["rescued"]:
            log.warning("rescued %d jobs of dead workers (%d failed as poison)", row["rescued"], row["poisoned"])
            columns = (row["rescue_queues"], row["rescue_tasks"], row["rescue_outcomes"], row["rescue_counts"])
            for queue, task, outcome, n in zip(*columns, strict=True):
                state.tally.count(outcome, n, queue, task)  # already in the activity table: not reported again
        if row["pruned"]:
            log.info("pruned %d finished jobs past retention", row["pruned"])
        for job_id in row["cancel_ids"] or ():
            self.cancel(job_id)
        if not row["alive"]:
            await self._lease_lost()
        if row["suspects"] and not state.suspects:
            state.suspects = True
        if row["has_work"]:
            state.claim_ready = True
        else:
            state.last_poll = time.monotonic()  # as good as a poll: nothing is ready
        state.wake.set()  # let the claimer re-plan its next poll
        return row

    async def rotate_archive(self) -> None:
        """The archive's partitions (:mod:`currant.archive`), and whether it is on.

        A refusal (a role that may not create tables, say) is logged once and
        tried again every round: it must not slow the heartbeat down.
        """
        self._next_rotation = time.monotonic() + self._rotation_period
        keep = self.config.keep_succeeded

        async def rotate(conn: Connection) -> tuple[bool, int, int, int]:
            result: tuple[bool, int, int, int] = await arun_plan(conn, archive.rotate(self.sql, keep))
            return result

        try:
            enabled, created, dropped, purged = await self.link.once(rotate)
        except LinkDown as exc:
            log.warning("archive rotation skipped (%s); next round in %g s", exc, self._rotation_period)
            return
        except psycopg.Error as exc:
            if not self._rotation_failed:
                log.warning("archive rotation failed (%s); trying again every %g s", exc, self._rotation_period)
            self._rotation_failed = True
            return
        self._rotation_failed = False
        if enabled != self.state.archiving:
            log.info("the archive is %s: successes %s", *(("on", "move there") if enabled else ("off", "stay in jobs")))
        self.state.archiving = enabled
        if created or dropped or purged:
            log.info(
                "archive: %d partitions created, %d dropped past retention, %d rows pruned from its default partition",
                created,
                dropped,
                purged,
            )

    def cancel(self, job_id: int) -> None:
        """Cancellation asked for a job; ours to act on if we hold it."""
        if job_id in self.state.held:
            self.lanes.cancel(job_id)

    async def nothing_left(self) -> bool:
        """Burst mode: True when nothing is held and, after promoting due jobs, nothing is ready."""
        row = await self.beat()
        if row is None:
            await asyncio.sleep(0.2)  # the database is unreachable: that is not "nothing to do"
            return False
        if row["promoted"] or row["has_work"] or row["suspects"]:
            self.state.claim_ready = True
            return False
        return True

    async def _lease_lost(self) -> None:
        """Our registration was swept (we were silent past dead_after): our jobs
        were rescued, so drop what we prefetched and register anew."""
        if self._reregistering:
            return
        self._reregistering = True
        try:
            dropped = self.lanes.take_unstarted()
            for job in dropped:
                self.state.held.pop(job[0], None)
            log.error(
                "worker %s was declared dead (no heartbeat for %.0f s); its jobs were rescued;"
                " dropped %d prefetched jobs and registering again",
                self.state.worker_id,
                self.config.dead_after,
                len(dropped),
            )
            await self.register()
        finally:
            self._reregistering = False
