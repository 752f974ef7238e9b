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
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from . import schema as schema_plans
from .errors import EnqueueOutcomeUnknown
from .plans import Plan, arun_plan, run_plan

POOL_MAX_SIZE = 8


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
    def __init__(self, dsn: Callable[[], str], schema: str, auto_migrate: bool) -> None:
        self._dsn = dsn
        self._schema = schema
        self._auto_migrate = auto_migrate
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Any] | None = None
        self.schema_checked = False

    def pool(self) -> ConnectionPool[Any]:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self._dsn(), min_size=1, max_size=POOL_MAX_SIZE, kwargs={"autocommit": True}, open=True,
                    name="currant",
                )
            pool = self._pool
        if self._auto_migrate and not self.schema_checked:
            with pool.connection() as conn:
                self.run_on(conn, schema_plans.ensure(self._schema), transaction=True)
            self.schema_checked = True
        return pool

    def run(self, plan: Plan, connection: Any = None, *, transaction: bool = False, write: bool = False) -> Any:
        if connection is not None:
            if isinstance(connection, psycopg.AsyncConnection):
                plan.close()
                raise TypeError("an AsyncConnection needs the async API (aenqueue, aenqueue_many, ...)")
            return self.run_on(connection, plan, transaction=transaction)
        with self.pool().connection() as conn:
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
    def __init__(self, dsn: Callable[[], str], schema: str, auto_migrate: bool) -> None:
        self._dsn = dsn
        self._schema = schema
        self._auto_migrate = auto_migrate
        self._lock: asyncio.Lock | None = None
        self._pool: AsyncConnectionPool[Any] | None = None
        self.schema_checked = False

    async def pool(self) -> AsyncConnectionPool[Any]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # two first calls at once must not open two pools
            if self._pool is None:
                dsn = await asyncio.to_thread(self._dsn)  # may start the embedded server
                pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                    dsn, min_size=1, max_size=POOL_MAX_SIZE, kwargs={"autocommit": True}, open=False,
                    name="currant-async",
                )
                await pool.open()
                self._pool = pool
            if self._auto_migrate and not self.schema_checked:
                async with self._pool.connection() as conn:
                    await self.run_on(conn, schema_plans.ensure(self._schema), transaction=True)
                self.schema_checked = True
            return self._pool

    async def run(self, plan: Plan, connection: Any = None, *, transaction: bool = False, write: bool = False) -> Any:
        if connection is not None:
            if not isinstance(connection, psycopg.AsyncConnection):
                plan.close()
                raise TypeError("a sync Connection needs the sync API (enqueue, enqueue_many, ...)")
            return await self.run_on(connection, plan, transaction=transaction)
        async with (await self.pool()).connection() as conn:
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

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
