"""The worker's side of rate and concurrency limits.

The database decides what may run (``claim_limited``, migration
0007_limits); the worker declares its tasks' limits when it starts, asks for
limited jobs only while it has free lanes (a limited job claimed early would
spend a token or a slot while it waits), and remembers when asking again can
give something: at the next token of a held-back key, after one of its own
limited jobs finished, or at the next notification or poll. A worker whose
tasks have no limits never gets here.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from .. import codec, limits
from ..limits import Limit
from .links import Connection

log = logging.getLogger("currant.worker")

# Idle buckets are dropped (full again after an hour) about this often.
PRUNE_EVERY = 600.0


def split_held_back(rows: list[Any]) -> tuple[list[Any], float | None, bool]:
    """claim_limited's answer: (the claimed jobs' rows, seconds until a held-back
    key's next token or None, whether some key waits for its running jobs).

    A held-back key comes as an extra row with no id (see claim_limited() in
    0007_limits): its ``waited`` column says when its next token is due and
    its ``attempts`` column whether it waits for running jobs instead.
    """
    jobs: list[Any] = []
    hold: float | None = None
    waits = False
    for row in rows:
        if row[0] is not None:
            jobs.append(row)
            continue
        waited, waits_for_running = row[5], row[1]
        if waited is not None:
            hold = waited if hold is None else min(hold, waited)
        waits = waits or bool(waits_for_running)
    return jobs, hold, waits


class LimitedClaims:
    def __init__(self, tasks: dict[str, Limit], sql: dict[str, str]) -> None:
        self.tasks = tasks
        self.sql = sql
        self.due = 0.0  # monotonic time from which a limited claim may give something
        self.on_completion = False  # some key waits for one of its running jobs to finish
        self._round_hold: float | None = None
        self._round_full = False
        self._round_waits = False
        self._last_prune = time.monotonic()

    @classmethod
    def of(cls, registry: dict[str, Any], sql: dict[str, str]) -> LimitedClaims | None:
        """For the tasks of an app (name -> Task); None when no task is limited."""
        tasks = {name: task.limit for name, task in registry.items() if task.limit is not None}
        return cls(tasks, sql) if tasks else None

    async def declare(self, conn: Connection, registry: dict[str, Any]) -> None:
        """Write this worker's view of every task's limits (see declare_limits)."""
        params = limits.declaration((name, task.limit) for name, task in registry.items())
        await conn.execute(self.sql["declare_limits"], params)

    def ready(self, now: float) -> bool:
        return now >= self.due

    def job_finished(self) -> None:
        """One of our jobs finished: a key held by its running jobs may have room."""
        if self.on_completion:
            self.on_completion = False
            self.due = 0.0

    # -- one claim round (one call of Claimer._claim) -------------------------------

    def start_round(self) -> None:
        self._round_hold, self._round_full, self._round_waits = None, False, False

    async def claim(self, conn: Connection, queue: str, worker_id: int, limit: int) -> list[Any]:
        """Up to ``limit`` limited jobs of ``queue`` (the claim's columns)."""
        params = {"queue": queue, "worker": worker_id, "limit": limit}
        cur = await conn.execute(self.sql["claim_limited"], params, binary=True)
        rows, hold, waits = split_held_back(await cur.fetchall())
        if hold is not None:
            self._round_hold = hold if self._round_hold is None else min(self._round_hold, hold)
        self._round_waits = self._round_waits or waits
        if len(rows) >= limit:
            self._round_full = True
        if time.monotonic() - self._last_prune > PRUNE_EVERY:
            self._last_prune = time.monotonic()
            await conn.execute(self.sql["prune_limit_buckets"])
        return rows

    def end_round(self) -> None:
        now = time.monotonic()
        if self._round_full:
            self.due = now  # a full batch: there may be more at once
        elif self._round_hold is not None:
            self.due = now + self._round_hold
        else:
            self.due = math.inf  # until a notification, a poll, or (below) a completion
        self.on_completion = self._round_waits

    # -- jobs of limited tasks that came without a key ---------------------------------

    async def sort_out(self, conn: Connection, rows: list[Any], worker_id: int) -> list[Any]:
        """The rows a normal claim may run; jobs of limited tasks among them (enqueued
        by a producer that did not know the task) go back with their key."""
        keep, handed = sort_out(self.tasks, rows, worker_id)
        if handed is None:
            return rows
        await conn.execute(self.sql["hand_to_limits"], handed)
        log.info("%d jobs of limited tasks came without a limit key: handed to their limits", len(handed["ids"]))
        self.due = 0.0
        return keep


def sort_out(tasks: dict[str, Limit], rows: list[Any], worker_id: int) -> tuple[list[Any], dict[str, Any] | None]:
    """Split a normal claim's rows: (the rows it may run, the ``hand_to_limits``
    parameters of the jobs of limited tasks among them, or None if there are none)."""
    if not any(row[2] in tasks for row in rows):
        return rows, None
    keep, ids, attempts, keys = [], [], [], []
    for row in rows:
        limit = tasks.get(row[2])
        if limit is None:
            keep.append(row)
            continue
        try:
            args, kwargs = codec.unpack_payload(row[3])
            key = limit.key_for(args, kwargs)
        except (TypeError, ValueError):
            key = ""  # it fails when it runs; meanwhile it is held to the task-wide limit
        ids.append(row[0])
        attempts.append(row[1])
        keys.append(key)
    return keep, {"ids": ids, "attempts": attempts, "keys": keys, "worker": worker_id}
