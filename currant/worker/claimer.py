"""The claimer: keeps the lanes' local queue filled, on the claims connection.

When the local queue is at or below its low-water mark (half the claim
size) and jobs may be ready, it claims up to the claim size; several queues
strictly in the order given, the next only when those before it could not
fill the claim. The claim size is ``--batch-size``, and grows up to eight
times that while the lanes run dry between claims (:class:`ClaimSize`).
Rescued jobs ("suspects") are never claimed in a batch: once the worker holds
nothing, it claims one and lets it run alone.

When nothing is ready it waits for a wake-up (a notification, a lane making
room) or for the fallback poll, which it lines up with the heartbeat: the
heartbeat reports ready work too, so an idle worker sends one statement per
interval. Jobs of rate- or concurrency-limited tasks are claimed after the
others, while lanes are free, and asked for again when a limit lets them
(:mod:`currant.worker.limited`). A claim round of such an app is two
statements, so its fallback poll asks ``has_ready`` first (one statement,
both kinds of job) and claims only when that says yes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import operator
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .. import codec, faults
from .arrays import id_arrays
from .config import WorkerConfig
from .lanes import Claimed, Lanes
from .limited import LimitedClaims
from .links import Connection, Link, within
from .metrics import WorkerMetrics
from .state import WorkerState

log = logging.getLogger("currant.worker")

_ID = operator.itemgetter(0)
_PRIORITY = operator.itemgetter(9)


def in_claim_order(rows: list[Any]) -> list[Any]:
    """The claim's rows as the local queue is to run them: highest priority
    first, FIFO (by id) within a priority. The claim statement leaves the
    order to us (see its comment); both sorts are stable and C-level, and
    linear on the usual batch, already in id order and of one priority."""
    rows.sort(key=_ID)
    rows.sort(key=_PRIORITY, reverse=True)
    return rows


class ClaimSize:
    """How many jobs the worker may hold claimed but not started (its
    prefetch): ``--batch-size``, and up to ``GROWTH`` times that while the
    jobs are short. The next claim takes what brings the local queue up to it.

    It doubles when a full claim, after a full one, reached lanes that had run
    dry meanwhile: they finish jobs faster than a round trip brings them, and a
    drain of short jobs wants fewer, larger claims (each pays a commit and a
    round trip besides its rows: at 1,000 no-op jobs per claim, about a
    quarter of the claims connection's time, BENCHMARKS.md). It halves, back
    toward ``--batch-size``, when what the last full claim brought lasted
    longer than ``HORIZON`` before the queue fell to its low-water mark: jobs
    got slower, and a worker should not hold more than it can start soon
    (work that other workers could be running).
    """

    GROWTH = 8
    HORIZON = 1.0  # seconds

    def __init__(self, batch_size: int) -> None:
        self.least = batch_size
        self.most = batch_size * self.GROWTH
        self.current = batch_size
        self._ran_dry = False
        self._full_at: float | None = None  # when the last claim came back full

    def room(self, queued: int) -> bool:
        """Whether the local queue is low enough to claim more."""
        return queued <= max(1, self.current // 2)

    def ran_dry(self) -> None:
        """A claim's jobs arrive to an empty local queue."""
        self._ran_dry = True

    def before_claim(self, now: float) -> None:
        if self._full_at is not None and now - self._full_at > self.HORIZON:
            self.current = max(self.least, self.current // 2)

    def after_claim(self, full: bool, now: float) -> None:
        # After a full claim only: a worker's first claim always finds its lanes idle.
        if full and self._ran_dry and self._full_at is not None:
            self.current = min(self.most, self.current * 2)
        self._ran_dry = False
        self._full_at = now if full else None


class Claimer:
    def __init__(
        self,
        state: WorkerState,
        config: WorkerConfig,
        lanes: Lanes,
        link: Link,
        sql: dict[str, str],
        channel: str,
        burst_check: Callable[[], Awaitable[bool]],
        metrics: WorkerMetrics | None = None,
        limited: LimitedClaims | None = None,
    ) -> None:
        self.state = state
        self.config = config
        self.lanes = lanes
        self.link = link
        self.sql = sql
        self.channel = channel
        self.size = ClaimSize(config.batch_size)
        self._burst_check = burst_check  # True when, after promoting due jobs, nothing is left to do
        self.metrics = metrics
        self.limited = limited
        # Under a supervisor: told when a claim came back full (HostWakeups.pass_on),
        # and whether a lane is free (HostWakeups.capacity), at every turn of the loop.
        self.on_full_batch: Callable[[str], None] | None = None
        self.on_capacity: Callable[[bool], None] | None = None
        # Whether other hosts serve a queue (currant.worker.turns): then a full
        # claim also NOTIFYs "r:<queue>", so that a burst, which one host's
        # turn woke, reaches the next host in turn before its poll.
        self.spread: Callable[[str], bool] | None = None
        # state.wake_seq when the fallback poll made a claim ready, and nothing else had.
        self._polled_at_seq: int | None = None
        link.on_fresh = self._release_unknown

    async def run(self, completer: asyncio.Task[None]) -> None:
        """Claim until stopping (or, in burst mode, until nothing is left)."""
        state, config, lanes = self.state, self.config, self.lanes
        while True:
            if self.on_capacity is not None:
                self.on_capacity(self._free() > 0)
            if completer.done():
                completer.result()  # the completer died: raise what killed it
                raise RuntimeError("the completer stopped while the worker runs")
            # Rescued jobs run alone: drain what we hold first, then take one.
            suspects_wait = state.suspects and not state.stopping
            if suspects_wait and not state.held:
                await self._claim_suspect()
                continue
            queued = lanes.local.qsize()
            room = self.size.room(queued)
            limited_ready = self._limited_ready()
            if not state.stopping and not suspects_wait and (state.claim_ready or limited_ready) and room:
                if self._polled_at_seq is not None and await self._poll_finds_nothing(limited_ready):
                    continue
                self.size.before_claim(time.monotonic())
                limit = self.size.current - queued
                seq = state.wake_seq
                normal = state.claim_ready
                claim = functools.partial(self._claim, limit=limit, normal=normal, limited=normal or limited_ready)
                claimed = await self.link.run(claim)
                state.last_poll = time.monotonic()
                if self.link.round_is_one_transaction:
                    for queue, rows in claimed:
                        self._dispatch(rows, queue)
                count = sum(len(rows) for _queue, rows in claimed)
                self.size.after_claim(count >= limit, time.monotonic())
                state.claims += 1
                state.empty_claims += not count
                if self.metrics is not None and count:
                    self.metrics.claimed(count)
                if normal and count >= limit and claimed and self.on_full_batch is not None:
                    self.on_full_batch(claimed[-1][0])  # more may be waiting: another process may help
                if normal and count < limit and seq == state.wake_seq:
                    state.claim_ready = False  # the queue is empty: wait for a notification or the poll
                continue
            if state.stopping:
                return
            # A held-back limited key is work to come: no need to ask the database.
            limited_later = self.limited is not None and self.limited.due < math.inf
            if config.burst and not state.held and not limited_later and await self._burst_check():
                state.stopping = True
                return
            await self._wait(room, suspects_wait)

    async def _wait(self, room: bool, suspects_wait: bool) -> None:
        state, config = self.state, self.config
        # Under a supervisor that polls for the host, every process's own poll
        # would be an empty claim per process per interval: ours waits for
        # the heartbeat's length instead (the heartbeat reports ready work).
        interval = max(config.poll_interval, config.heartbeat) if state.host_polls else config.poll_interval
        due = state.last_poll + interval
        if abs(due - state.next_beat) < interval / 2:
            # The heartbeat about then checks for ready jobs too: let it be
            # this poll, so an idle worker sends one statement per interval.
            due = state.next_beat + interval
        timeout = due - time.monotonic()
        if timeout <= 0:
            self._poll_due()
            if room and not suspects_wait:
                return
            # Nowhere to put a claim yet: wait for the lanes to make room or
            # the completer to clear what we hold (both wake us).
            timeout = interval
        poll_at = time.monotonic() + timeout
        if self.limited is not None and self._free() > 0:
            timeout = min(timeout, max(0.0, self.limited.due - time.monotonic()))  # a held-back key's turn
        state.wake.clear()
        self.lanes.request_wake()  # the next finished job wakes us: the local queue shrank
        try:
            await within(timeout, state.wake.wait())
        except asyncio.TimeoutError:
            if time.monotonic() >= poll_at:
                self._poll_due()

    def _poll_due(self) -> None:
        state = self.state
        if not state.claim_ready:
            self._polled_at_seq = state.wake_seq
        state.claim_ready = True

    async def _poll_finds_nothing(self, limited_ready: bool) -> bool:
        """For an app with limited tasks, a claim ready only because the
        fallback poll was due first asks ``has_ready`` (idle, as it mostly is,
        one statement instead of claim and claim_limited). Not while a key is
        known to be held back (``limited.due`` set): those jobs make it say
        yes every time. True: nothing to claim, and the poll is done."""
        seq, self._polled_at_seq = self._polled_at_seq, None
        if seq != self.state.wake_seq or limited_ready:
            return False  # something besides the poll said jobs may be ready
        if self.limited is None or self.limited.due < math.inf:
            return False  # one claim is the poll (no limits), or the limited jobs wait their turn

        async def ask(conn: Connection) -> bool:
            cur = await conn.execute(self.sql["has_ready"], {"queues": self.config.queues}, prepare=True)
            row = await cur.fetchone()
            return bool(row and row[0])

        ready = await self.link.run(ask)
        self.state.last_poll = time.monotonic()
        if not ready and seq == self.state.wake_seq:
            self.state.claim_ready = False
            return True
        return False

    def _free(self) -> int:
        """Lanes with nothing to do: what a limited claim may take."""
        return self.config.concurrency - len(self.state.held)

    def _limited_ready(self) -> bool:
        return self.limited is not None and self.limited.ready(time.monotonic()) and self._free() > 0

    async def _claim(
        self, conn: Connection, limit: int, normal: bool = True, limited: bool = False
    ) -> list[tuple[str, list[Any]]]:
        """Up to ``limit`` jobs, queue by queue in order: [(queue, rows), ...].

        Where each statement commits on its own, each batch goes to the lanes
        as soon as it is claimed: a job waits for no later statement of the
        round (with limited tasks declared, every round also runs
        claim_limited: a second round trip of idle pickup). Dispatched jobs
        are held, so a retried round neither loses nor releases them. Through
        a pooler the round is one transaction: nothing runs before it commits
        (the caller dispatches), or a job could run on a claim rolled back."""
        claimed: list[tuple[str, list[Any]]] = []
        count = 0
        worker_id = self.state.worker_id
        at_once = not self.link.round_is_one_transaction  # each claim commits by itself
        limits = self.limited if limited else None
        if limits is not None:
            limits.start_round()
        for queue in self.config.queues:
            if count >= limit:
                break
            rows: list[Any] = []
            if normal:
                params = {"queue": queue, "limit": limit - count, "worker": worker_id}
                cur = await conn.execute(self.sql["claim"], params, prepare=True, binary=True)
                rows = in_claim_order(await cur.fetchall())
                if self.limited is not None and rows:
                    claimed_rows = len(rows)
                    rows = await self.limited.sort_out(conn, rows, worker_id)
                    if len(rows) < claimed_rows:
                        self.state.jobs_ready()  # the batch was not the queue's last: claim again
            if rows:
                if at_once:
                    self._dispatch(rows, queue)
                claimed.append((queue, rows))
                count += len(rows)
            free = min(limit - count, self._free() - (0 if at_once else count))  # dispatched jobs are held
            if limits is not None and free > 0:
                rows = await limits.claim(conn, queue, worker_id, free)
                if rows:
                    if at_once:
                        self._dispatch(rows, queue)
                    claimed.append((queue, rows))
                    count += len(rows)
        if limits is not None:
            limits.end_round()
        if normal and count >= limit and claimed and self.spread is not None and self.spread(claimed[-1][0]):
            # In the claim's round (its transaction, through a pooler). It
            # cannot go on forever: each is a full batch taken, and the first
            # claim that is not full sends none.
            await conn.execute(self.sql["notify"], {"channel": self.channel, "payload": f"r:{claimed[-1][0]}"})
        return claimed

    async def _claim_suspect(self) -> None:
        """Claim one rescued job and let it run alone (nothing else is held)."""
        for queue in self.config.queues:
            rows = await self.link.run(functools.partial(self._claim_one_suspect, queue=queue))
            if rows:
                log.warning("running rescued job %s alone", rows[0][0])
                self._dispatch(rows, queue)
                return
        self.state.suspects = False

    async def _claim_one_suspect(self, conn: Connection, queue: str) -> list[Any]:
        params = {"queue": queue, "worker": self.state.worker_id}
        cur = await conn.execute(self.sql["claim_suspect"], params, prepare=True, binary=True)
        return list(await cur.fetchall())

    def _dispatch(self, rows: list[Any], queue: str) -> None:
        if not self.lanes.local.qsize():
            self.size.ran_dry()
        held = self.state.held
        put = self.lanes.local.put
        for job in codec.decode_claimed(rows, queue):
            held[job[0]] = job
            put(job)
        faults.point("after_claim_commit")

    async def _release_unknown(self, conn: Connection) -> None:
        """After a failed round trip a claim may have committed without us
        seeing its rows: hand back whatever is leased to us that we do not hold."""
        cur = await conn.execute(
            self.sql["release_unknown"], {"worker": self.state.worker_id, "held": list(self.state.held)}
        )
        if cur.rowcount:
            log.warning("returned %d jobs claimed by a round trip whose answer was lost", cur.rowcount)

    async def release(self, jobs: list[Claimed]) -> None:
        """Hand back claimed jobs that never started, their attempt refunded."""
        ids, attempts = id_arrays((job[0], job[1]) for job in jobs)
        params = {"ids": ids, "attempts": attempts, "worker": self.state.worker_id}

        async def hand_back(conn: Connection) -> None:
            cur = await conn.execute(self.sql["release"], params)
            for queue in {row[0] for row in await cur.fetchall()}:
                await conn.execute(self.sql["notify"], {"channel": self.channel, "payload": f"r:{queue}"})

        await self.link.run(hand_back)
        for job in jobs:
            self.state.held.pop(job[0], None)
        log.info("returned %d prefetched jobs to the queue", len(jobs))
