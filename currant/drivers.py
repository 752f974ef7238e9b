"""The sync and the async driver: where an App's plans meet a connection.

Each driver owns a connection pool (opened on first use), checks the schema
once (migrating it when ``auto_migrate``), and runs plans under one policy:

* with the caller's ``connection``, the plan joins the caller's transaction
  (``transaction=True`` wraps it in a savepoint-or-transaction block) and the
  caller commits;
* otherwise on a pooled connection, in autocommit or in a transaction of its
  own; for a *write* whose connection dies while it commits, the outcome is
  unknown: :class:`~currant.errors.EnqueueOutcomeUnknown`, never a plain
  connection error that would invite a blind, duplicating retry.

The two classes mirror each other line for line; only the waiting differs.
"""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from . import dsn as dsns
from . import schema as schema_plans
from .errors import DatabaseUnavailable, EnqueueOutcomeUnknown
from .plans import Plan, arun_plan, run_plan

POOL_MAX_SIZE = 8
DEFAULT_CONNECT_TIMEOUT = 5.0


def _libpq_timeout(seconds: float) -> int:
    return max(2, math.ceil(seconds))  # libpq takes whole seconds, and treats 1 as 2


def _connect_kwargs(timeout: float, pooled: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": _libpq_timeout(timeout)}
    if pooled:
        # Behind a transaction-mode pooler a prepared statement lives on one
        # server connection and the next transaction may run on another
        # (PgBouncer before 1.21): psycopg must not prepare after 5 uses.
        kwargs["prepare_threshold"] = None
    return kwargs


def _unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"cannot connect to PostgreSQL at {dsns.describe(dsn)}: {dsns.reason(exc)}")


def _pool_timeout(dsn: str, seconds: float) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"no connection to PostgreSQL at {dsns.describe(dsn)} within {seconds:g} s")


def outcome_unknown(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], exc: Exception
) -> EnqueueOutcomeUnknown | None:
    """What a failed committing step means: an unknown outcome if the connection
    died under it; None if the server answered (then nothing committed)."""
    if isinstance(exc, psycopg.OperationalError) and (conn.closed or conn.broken):
        return EnqueueOutcomeUnknown(
            f"the connection failed while the enqueue was committing; the job may or may not exist: {exc}"
        )
    return None


class SyncDriver:
    def __init__(
        self, dsn: Callable[[], str], schema: str, auto_migrate: bool, connect_timeout: float, pooled: bool = False
    ) -> None:
        self._dsn = dsn
        self._pooled = pooled
        self._schema = schema
        self._auto_migrate = auto_migrate
        self._timeout = connect_timeout
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Any] | None = None
        self.schema_checked = False

    def pool(self) -> ConnectionPool[Any]:
        with self._lock:
            if self._pool is None:
                # One plain connection first: a wrong DSN or a server that is
                # not there is reported at once, in one line, instead of by a
                # pool retrying in the background until its timeout.
                with self.direct():
                    pass
                self._pool = ConnectionPool(
                    self._dsn(),
                    min_size=1,
                    max_size=POOL_MAX_SIZE,
                    kwargs=self._kwargs(),
                    timeout=self._timeout,
                    open=True,
                    name="currant",
                )
            pool = self._pool
        if self._auto_migrate and not self.schema_checked:
            with self._checkout(pool) as conn:
                self.run_on(conn, schema_plans.ensure(self._schema), transaction=True)
            self.schema_checked = True
        return pool

    def _kwargs(self) -> dict[str, Any]:
        return _connect_kwargs(self._timeout, self._pooled)

    @contextmanager
    def direct(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of its own (not pooled), in autocommit, closed after use."""
        dsn = self._dsn()
        try:
            conn = psycopg.connect(dsn, **self._kwargs())
        except psycopg.Error as exc:
            raise _unavailable(dsn, exc) from None
        with conn:
            yield conn

    @contextmanager
    def _checkout(self, pool: ConnectionPool[Any]) -> Iterator[psycopg.Connection[Any]]:
        try:
            conn = pool.getconn()
        except PoolTimeout:
            raise _pool_timeout(self._dsn(), self._timeout) from None
        try:
            yield conn
        finally:
            pool.putconn(conn)

    def run(self, plan: Plan, connection: Any = None, *, transaction: bool = False, write: bool = False) -> Any:
        if connection is not None:
            if isinstance(connection, psycopg.AsyncConnection):
                plan.close()
                raise TypeError("an AsyncConnection needs the async API (aenqueue, aenqueue_many, ...)")
            return self.run_on(connection, plan, transaction=transaction)
        with self._checkout(self.pool()) as conn:
            if not transaction:
                try:
                    return run_plan(conn, plan)
                except psycopg.Error as exc:
                    unknown = outcome_unknown(conn, exc) if write else None
                    if unknown is None:
                        raise
                    raise unknown from exc
            conn.autocommit = False
            try:
                result = run_plan(conn, plan)
                try:
                    conn.commit()
                except psycopg.Error as exc:
                    unknown = outcome_unknown(conn, exc)
                    if unknown is None:
                        raise
                    raise unknown from exc
                return result
            finally:
                if conn.info.transaction_status != pq.TransactionStatus.UNKNOWN:
                    conn.rollback()
                    conn.autocommit = True

    @staticmethod
    def run_on(conn: psycopg.Connection[Any], plan: Plan, *, transaction: bool) -> Any:
        if transaction:
            with conn.transaction():
                return run_plan(conn, plan)
        return run_plan(conn, plan)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


class AsyncDriver:
    def __init__(
        self, dsn: Callable[[], str], schema: str, auto_migrate: bool, connect_timeout: float, pooled: bool = False
    ) -> None:
        self._dsn = dsn
        self._pooled = pooled
        self._schema = schema
        self._auto_migrate = auto_migrate
        self._timeout = connect_timeout
        self._lock: asyncio.Lock | None = None
        self._pool: AsyncConnectionPool[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the pool lives on
        self._connections: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()
        self._closing: set[asyncio.Task[None]] = set()
        self.schema_checked = False

    async def pool(self) -> AsyncConnectionPool[Any]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # two first calls at once must not open two pools
            if self._pool is None:
                async with self.direct():  # reports a bad DSN or no server at once (see SyncDriver.pool)
                    pass
                pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                    await asyncio.to_thread(self._dsn),
                    min_size=1,
                    max_size=POOL_MAX_SIZE,
                    kwargs=self._kwargs(),
                    timeout=self._timeout,
                    open=False,
                    name="currant-async",
                    configure=self._track,
                )
                await pool.open()
                self._pool, self._loop = pool, asyncio.get_running_loop()
            if self._auto_migrate and not self.schema_checked:
                async with self._checkout(self._pool) as conn:
                    await self.run_on(conn, schema_plans.ensure(self._schema), transaction=True)
                self.schema_checked = True
            return self._pool

    def _kwargs(self) -> dict[str, Any]:
        return _connect_kwargs(self._timeout, self._pooled)

    @asynccontextmanager
    async def direct(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of its own (not pooled), in autocommit, closed after use."""
        dsn = await asyncio.to_thread(self._dsn)  # may start the embedded server
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, **self._kwargs())
        except psycopg.Error as exc:
            raise _unavailable(dsn, exc) from None
        async with conn:
            yield conn

    @asynccontextmanager
    async def _checkout(self, pool: AsyncConnectionPool[Any]) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            conn = await pool.getconn()
        except PoolTimeout:
            raise _pool_timeout(await asyncio.to_thread(self._dsn), self._timeout) from None
        try:
            yield conn
        finally:
            await pool.putconn(conn)

    async def run(self, plan: Plan, connection: Any = None, *, transaction: bool = False, write: bool = False) -> Any:
        if connection is not None:
            if not isinstance(connection, psycopg.AsyncConnection):
                plan.close()
                raise TypeError("a sync Connection needs the sync API (enqueue, enqueue_many, ...)")
            return await self.run_on(connection, plan, transaction=transaction)
        async with self._checkout(await self.pool()) as conn:
            if not transaction:
                try:
                    return await arun_plan(conn, plan)
                except psycopg.Error as exc:
                    unknown = outcome_unknown(conn, exc) if write else None
                    if unknown is None:
                        raise
                    raise unknown from exc
            await conn.set_autocommit(False)
            try:
                result = await arun_plan(conn, plan)
                try:
                    await conn.commit()
                except psycopg.Error as exc:
                    unknown = outcome_unknown(conn, exc)
                    if unknown is None:
                        raise
                    raise unknown from exc
                return result
            finally:
                if conn.info.transaction_status != pq.TransactionStatus.UNKNOWN:
                    await conn.rollback()
                    await conn.set_autocommit(True)

    @staticmethod
    async def run_on(conn: psycopg.AsyncConnection[Any], plan: Plan, *, transaction: bool) -> Any:
        if transaction:
            async with conn.transaction():
                return await arun_plan(conn, plan)
        return await arun_plan(conn, plan)

    async def _track(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._connections.add(conn)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def close_from_sync(self) -> None:
        """Close the pool from sync code (``App.close()``), wherever its loop is now."""
        pool, loop, self._pool = self._pool, self._loop, None
        if pool is None or loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # a sync call inside the pool's own loop: close in the background
            task = loop.create_task(pool.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        elif loop.is_running():  # the loop runs in another thread
            asyncio.run_coroutine_threadsafe(pool.close(), loop).result(10)
        elif not loop.is_closed():
            loop.run_until_complete(pool.close())
        else:
            # The loop that opened the pool is gone (asyncio.run returned):
            # its connections can still be closed, synchronously.
            for conn in list(self._connections):
                if not conn.closed:
                    conn.pgconn.finish()
