"""A worker's connections: each has one role and keeps itself alive.

A :class:`Link` is the one place that decides how a worker talks to
PostgreSQL through trouble:

* it (re)connects with the one backoff policy (:mod:`currant.backoff`);
* it gives every round trip a deadline (``db_timeout``): a half-open TCP
  connection answers nothing and is only found out that way;
* it sorts errors: a lost connection is replaced and the round trip retried;
  a deadlock or serialization failure is retried as is; any other database
  error is logged and retried more slowly (a worker never exits on a database
  fault), after the caller's ``on_error`` had a chance to change what it sends;
* it logs changes of state (lost, back), not every attempt.

A link runs one round trip at a time, so several parts of a worker can share
one (the claims link also carries the heartbeat: two connections per
worker process, see README "Running in production").

Two links can be *siblings* (claims and completions): they usually die
together, so when one fails the other is closed too if it is idle, and its
next round trip starts on a fresh connection instead of waiting out a second
timeout. A link can be *suspect* after a failure: its ``on_fresh`` callback
then runs before the next round trip (the claimer uses it to hand back a
claim whose answer was lost).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from .. import dsn as dsns
from ..backoff import Backoff
from .arrays import register_array_dumpers

log = logging.getLogger("currant.worker")

T = TypeVar("T")
Connection = psycopg.AsyncConnection[Any]

# Errors after which the connection is replaced and the round trip retried.
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, OSError)
# Errors that abort one round trip but leave the connection usable.
RETRYABLE_ERRORS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.LockNotAvailable)

# TCP keepalives so a dead peer is noticed by the kernel even while idle.
CONNECT_KWARGS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "application_name": "currant-worker",
}

# Every statement on the claim and completion connections reaches a few
# hundred rows by index, and three planner traps turned that into whole-table
# work:
# * statistics taken when no job was running estimate 1 row for "running jobs
#   of this worker", and the planner answered with a nested loop comparing every
#   row with every id (150 ms instead of 7 ms per 1,000 completions);
# * a generic plan cached while the table was nearly empty kept scanning the
#   whole table for every claim once it had grown (110-185 ms instead of 6 ms,
#   under sustained load);
# * with no statistics at all (a big enqueue into a new table) the claim
#   bitmap-scanned and sorted the whole backlog (130 ms instead of 2 ms).
# So: no nested loops, no sequential or bitmap scans (the claim walks its
# index in order and stops at LIMIT). With those gone a cached generic plan
# can only walk indexes, so plans are cached again (plan_cache_mode=auto; a
# worker idle on an empty table and then handed 200,000 jobs drains them as
# fast as with a fresh plan per claim): planning the claim took 0.8-1 ms,
# nothing next to a 1,000-row claim but a quarter of an idle pickup
# (benchmarks/pickup.py, BENCHMARKS.md).
# maintain() wants the planner's ordinary choices (under these settings it
# took 175 ms instead of 1 ms): it sets them back for itself (function-level
# SET, migration 0008), since the heartbeat now rides the claims connection.
# Through a transaction-mode pooler (PgBouncer) a connection is no session:
# startup options are refused ("unsupported startup parameter") and a SET
# would land on whichever server connection the pooler picked. There the same
# settings travel with each round trip instead: the link opens a transaction
# with the ``begin_work`` statement (worker.sql: BEGIN and SET LOCAL of these
# four) and commits it after the round trip's statements.
# And no JIT: a disabled plan node is costed at 10^10, far past
# jit_above_cost, so a statement left with no index to use (deregistering on
# an empty table) was JIT-compiled: 180-410 ms of LLVM for a 0.1 ms statement,
# which was most of an empty --burst run's time.
WORK_CONNECTION_OPTIONS = (
    "-c enable_nestloop=off -c enable_seqscan=off -c enable_bitmapscan=off -c plan_cache_mode=auto -c jit=off"
)


if sys.version_info >= (3, 11):

    async def within(seconds: float, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, or TimeoutError after ``seconds``. On the
        calling task: Python 3.11's ``wait_for`` runs it in a task of its own,
        one more turn of the loop per round trip, on idle pickup's path."""
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def within(seconds: float, awaitable: Awaitable[T]) -> T:
        return await asyncio.wait_for(awaitable, seconds)


# Said when a server refuses the startup options: the usual cause.
POOLER_HINT = (
    " (a connection pooler such as PgBouncer refuses startup options: run the worker with --transaction-pooling,"
    " see README 'Running in production')"
)


class GaveUp(Exception):
    """The worker stops trying to reach the database (see WorkerState.give_up)."""


class DatabaseRefused(GaveUp):
    """The first connection was refused for a reason waiting cannot cure (bad
    credentials, no such database or role): a configuration mistake to report."""


class LinkDown(Exception):
    """One round trip (:meth:`Link.once`) could not reach the database."""


class Link:
    """One connection with one role, kept alive across failures."""

    def __init__(
        self,
        role: str,
        dsn: str,
        *,
        timeout: float,
        give_up: Callable[[str, float], None],
        options: str = "",
        on_fresh: Callable[[Connection], Awaitable[None]] | None = None,
        pooled: bool = False,
        begin: str | None = None,
    ) -> None:
        self.role = role
        self.dsn = dsn
        self.timeout = timeout
        # Through a transaction-mode pooler: no startup options, no server-side
        # prepared statements (PgBouncer before 1.21 cannot follow them from
        # one server connection to the next), and the settings per round trip.
        self.pooled = pooled
        self.options = "" if pooled else options
        self.begin = begin if pooled and options else None
        self.on_fresh = on_fresh
        self.busy = False
        self.sibling: Link | None = None
        self._give_up = give_up  # (what, seconds down) -> raises GaveUp when the worker should stop trying
        self._conn: Connection | None = None
        self._suspect = False
        self._down_since: float | None = None
        self._connected_once = False
        self.reconnects = 0  # times the link came back after a loss (metrics)
        self._lock = asyncio.Lock()
        # One round trip at a time: the claims link also carries the
        # heartbeat, cron and progress reports (two connections per worker), and
        # a transaction (cron's, or the pooled settings') must not take in
        # another coroutine's statements.
        self._turn = asyncio.Lock()

    # -- connecting --------------------------------------------------------------

    async def connection(self) -> Connection:
        """The open connection, connecting (through any failure, with backoff) if needed."""
        async with self._lock:  # two coroutines may ask at once (heartbeat and a burst check)
            conn = self._conn
            if conn is not None and not conn.closed and not conn.broken:
                return conn
            backoff = Backoff()
            while True:
                try:
                    conn = await Connection.connect(self.dsn, autocommit=True, **self._connect_kwargs())
                except (*CONNECTION_ERRORS, psycopg.ProgrammingError) as exc:
                    if not self._connected_once and dsns.is_permanent(exc):
                        raise DatabaseRefused(
                            f"cannot connect to PostgreSQL at {dsns.describe(self.dsn)}: {dsns.reason(exc)}"
                            f"{POOLER_HINT if 'unsupported startup parameter' in str(exc) else ''}"
                        ) from None
                    self._give_up(f"connecting ({self.role})", self.down_for())
                    self.mark_down(exc)
                    await backoff.wait()
                    continue
                register_array_dumpers(conn)
                self._conn = conn
                self._connected_once = True
                self.mark_up()
                return conn

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs = dict(CONNECT_KWARGS)
        if self.pooled:
            kwargs["prepare_threshold"] = None  # also turns the statements' prepare=True off
        if self.options:
            # An explicit options parameter hides $PGOPTIONS from libpq: keep both.
            given = conninfo_to_dict(self.dsn).get("options") or os.environ.get("PGOPTIONS")
            kwargs["options"] = f"{given} {self.options}" if given else self.options
        return kwargs

    def mark_down(self, exc: BaseException) -> None:
        """A failure: logged when the link goes down, not at every later attempt."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            if isinstance(exc, asyncio.TimeoutError):
                reason = f"no answer within {self.timeout:g} s"
            else:
                reason = dsns.reason(exc) if isinstance(exc, psycopg.Error) else str(exc).strip() or type(exc).__name__
            log.warning("%s connection lost (%s); reconnecting", self.role, reason)
        else:
            log.debug("%s connection: still down (%s)", self.role, exc)

    def mark_up(self) -> None:
        if self._down_since is not None:
            log.info("%s connection restored after %.1f s", self.role, time.monotonic() - self._down_since)
            self._down_since = None
            self.reconnects += 1

    def down_for(self) -> float:
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    async def _ready(self) -> Connection:
        conn = await self.connection()
        if self._suspect and self.on_fresh is not None:
            await self.on_fresh(conn)
        self._suspect = False
        return conn

    @property
    def round_is_one_transaction(self) -> bool:
        """Through a pooler each round trip runs in a transaction of its own
        (``begin``), committed after its last statement; else every statement
        commits by itself."""
        return self.begin is not None

    # -- round trips -------------------------------------------------------------

    async def _call(self, conn: Connection, action: Callable[[Connection], Awaitable[T]]) -> T:
        """``action(conn)``; through a pooler, inside a transaction that carries the settings."""
        if self.begin is None:
            return await action(conn)
        if conn.info.transaction_status != TransactionStatus.IDLE:
            # A round trip interrupted mid-way (a timeout, a cancel) left its
            # transaction open or aborted: end it, or every BEGIN after it fails.
            await conn.rollback()
        # One round trip opens the transaction and sets the planner settings
        # (SET LOCAL: gone at its end, whichever server connection it was).
        await conn.execute(self.begin)
        try:
            result = await action(conn)
            await conn.commit()
        except psycopg.Error:
            if not conn.closed and not conn.broken:
                await conn.rollback()  # a server error: the connection stays, its transaction goes
            raise
        return result

    async def run(
        self,
        action: Callable[[Connection], Awaitable[T]],
        on_error: Callable[[psycopg.Error], None] | None = None,
    ) -> T:
        """``action(connection)``, retried through every failure until it succeeds."""
        backoff = Backoff()
        while True:
            try:
                async with self._turn:
                    conn = await within(self.timeout, self._ready())
                    self.busy = True
                    try:
                        result = await within(self.timeout, self._call(conn, action))
                    finally:
                        self.busy = False
                self.mark_up()
                return result
            except (*CONNECTION_ERRORS, asyncio.TimeoutError) as exc:
                self._give_up(f"round trip ({self.role})", self.down_for())
                self.mark_down(exc)
                await self.drop()
            except RETRYABLE_ERRORS as exc:
                self._give_up(f"round trip ({self.role})", 0.0)
                log.info("%s round trip hit %s; retrying", self.role, type(exc).__name__)
            except psycopg.Error as exc:
                # Not a connection problem, but never a reason to exit: log it,
                # let the caller adjust, and try again more slowly.
                self._give_up(f"round trip ({self.role})", 0.0)
                log.error("database error in a %s round trip (%s: %s); retrying", self.role, type(exc).__name__, exc)
                self._suspect = True
                if on_error is not None:
                    on_error(exc)
            await backoff.wait()

    async def once(self, action: Callable[[Connection], Awaitable[T]]) -> T:
        """``action(connection)`` tried once; LinkDown if the database could not be reached."""
        async with self._turn:
            try:
                conn = await within(self.timeout, self._ready())
                return await within(self.timeout, self._call(conn, action))
            except (*CONNECTION_ERRORS, asyncio.TimeoutError) as exc:
                # The idle sibling too, as in run(): the heartbeat shares the
                # claims link, and its failure is as good a sign as a claim's
                # that the completions connection is gone or half-open.
                await self.drop()
                raise LinkDown(str(exc).strip() or type(exc).__name__) from exc

    # -- closing -----------------------------------------------------------------

    async def drop(self, siblings: bool = True) -> None:
        """Close this connection (it failed), and an idle sibling's with it.

        Both usually die together (a restart, a dead network path), and a
        half-open connection is only found out by a round trip timing out: an
        idle sibling kept would cost a second timeout on its next use.
        """
        await self._close()
        sibling = self.sibling
        if siblings and sibling is not None and not sibling.busy:
            await sibling._close()

    async def _close(self) -> None:
        # A round trip may have committed without us seeing its answer.
        self._suspect = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
