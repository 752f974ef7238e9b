"""What a worker's parts share: the lease bookkeeping and the wake-up signals.

Everything here is touched only on the event loop's thread, so there are no
locks. The claimer waits on ``wake``; anything that may mean "jobs are ready"
(a notification, LISTEN coming back, a heartbeat that saw work, a lane that
made room) sets it. The upkeep loop waits on ``due_changed`` to re-arm its
timer when a job becomes due earlier than it knew.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from .links import GaveUp
from .report import Tally


class WorkerState:
    def __init__(self, queues: list[str], burst: bool = False, db_timeout: float = math.inf) -> None:
        self.queues = queues
        self.burst = burst
        self.db_timeout = db_timeout
        self.worker_id = 0
        # Every job leased to us: id -> the claimed job (currant.worker.lanes.Claimed).
        self.held: dict[int, tuple[Any, ...]] = {}
        self.stopping = False
        self.stop_deadline = math.inf
        # The claimer's wake-up, and whether a claim may find something.
        self.wake = asyncio.Event()
        self.claim_ready = True
        self.wake_seq = 0  # bumped by every "jobs ready" signal: a claim that raced one must not conclude "empty"
        self.suspects = False  # rescued jobs wait to be run one at a time
        self.last_poll = 0.0  # monotonic time the database last said what is ready
        self.next_beat = 0.0  # monotonic time of the next heartbeat
        # The upkeep loop's timer: the earliest known due job, on the database clock.
        self.next_due: float | None = None
        self.due_changed = asyncio.Event()
        self.clock_offset = 0.0  # database clock minus local clock, from the last heartbeat
        # The supervisor polls for the host (currant.fleet): our own fallback
        # poll waits for the heartbeat (which reports ready work too).
        self.host_polls = False
        self.archiving = False  # the schema's archive is on: successes move there (currant.archive)
        # What happened, for the exit summary.
        self.processed = 0
        self.claims = 0  # claim round trips, and those that found nothing (the thundering-herd measure)
        self.empty_claims = 0
        self.tally = Tally()

    def jobs_ready(self) -> None:
        """Something may be claimable now."""
        self.claim_ready = True
        self.wake_seq += 1
        self.wake.set()

    def queue_ready(self, queue: str) -> None:
        if queue in self.queues:
            self.jobs_ready()

    def host_polling(self, polls: bool) -> None:
        """Whether the supervisor polls for the host now; the claimer re-plans its wait."""
        self.host_polls = polls
        self.wake.set()

    def polled(self, ready: bool) -> None:
        """The database just said whether jobs are ready: as good as a poll."""
        self.last_poll = time.monotonic()
        if ready:
            self.claim_ready = True
            self.wake_seq += 1
        self.wake.set()

    def due_at(self, when: float) -> None:
        """A job becomes due at ``when`` (database clock, epoch seconds)."""
        if self.next_due is None or when < self.next_due:
            self.next_due = when
            self.due_changed.set()

    def queue_due(self, queue: str, when: float) -> None:
        if queue in self.queues:
            self.due_at(when)

    def db_now(self) -> float:
        """The database clock as of now, from the offset the last heartbeat measured."""
        return time.time() + self.clock_offset

    def begin_stop(self, grace: float) -> None:
        self.stopping = True
        self.stop_deadline = time.monotonic() + grace
        self.wake.set()

    def give_up(self, what: str, down_for: float) -> None:
        """Raise GaveUp when the worker should stop trying to reach the database:
        it is stopping and its grace period is over, or it runs ``--burst`` and
        the database has been unreachable for longer than ``--db-timeout``
        (a one-off run must end; a serving worker waits for as long as it takes)."""
        if self.stopping and time.monotonic() > self.stop_deadline:
            raise GaveUp(f"{what}: the database stayed unreachable through the shutdown grace period")
        if self.burst and down_for > self.db_timeout:
            raise GaveUp(f"{what}: the database has been unreachable for {down_for:.0f} s (--burst, --db-timeout)")
