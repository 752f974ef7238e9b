"""The App: task registry, connection handling, and the sync/async producer API."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from . import codec, schema
from .client import JobOptions, Plan, arun_plan, enqueue_many_plan, enqueue_plan, run_plan
from .errors import EnqueueOutcomeUnknown, UnknownTask
from .job import STATES, Job
from .sql import queries, quote_schema
from .task import BackoffPolicy, Task, check_name

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_SCHEMA = "currant"
DEFAULT_QUEUE = "default"


class Periodic:
    """A cron schedule attached to a task (see :meth:`App.periodic`)."""

    def __init__(self, name: str, schedule: str, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        from croniter import croniter

        if not croniter.is_valid(schedule):
            raise ValueError(f"periodic {name!r}: invalid cron expression {schedule!r}")
        codec.encode_payload(args, kwargs)  # arguments that cannot be encoded fail here, not at every tick
        self.name = check_name("periodic", name)
        self.schedule = schedule
        self.task = task
        self.args = args
        self.kwargs = kwargs


class App:
    """A Currant application: where jobs live and which tasks exist.

    ``dsn`` falls back to ``$CURRANT_DSN``, then to the embedded PostgreSQL
    (:mod:`currant.embedded`). ``schema`` (default ``$CURRANT_SCHEMA`` or
    ``currant``) is where the tables live, so several apps or test runs can
    share one database.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str | None = None,
        default_queue: str = DEFAULT_QUEUE,
        max_payload_size: int = codec.DEFAULT_MAX_PAYLOAD,
        auto_migrate: bool = True,
    ) -> None:
        self._dsn = dsn
        self.schema = schema or os.environ.get("CURRANT_SCHEMA") or DEFAULT_SCHEMA
        quote_schema(self.schema)  # validate now, not at first use
        self.default_queue = check_name("queue", default_queue)
        self.max_payload_size = max_payload_size
        self.auto_migrate = auto_migrate
        self.sql = queries(self.schema)
        self.channel = f"currant_{self.schema}"
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.periodics: dict[str, Periodic] = {}
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Any] | None = None
        self._apool: AsyncConnectionPool[Any] | None = None
        self._schema_checked = False

    # -- configuration -------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The connection string, resolved (and the embedded server started) on first use."""
        if self._dsn is None:
            self._dsn = os.environ.get("CURRANT_DSN")
        if not self._dsn:
            from .embedded import embedded_dsn

            self._dsn = embedded_dsn()
        return self._dsn

    @overload
    def task(self, fn: F) -> Task[Any, Any]: ...

    @overload
    def task(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        max_attempts: int = 25,
        retry_backoff: float | BackoffPolicy | None = None,
        timeout: float | None = None,
        priority: int = 0,
    ) -> Callable[[F], Task[Any, Any]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        max_attempts: int = 25,
        retry_backoff: float | BackoffPolicy | None = None,
        timeout: float | None = None,
        priority: int = 0,
    ) -> Any:
        """Register a function as a task (``@app.task`` or ``@app.task(name=..., ...)``)."""

        def register(function: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or f"{function.__module__}.{function.__qualname__}"
            if task_name in self.tasks:
                raise ValueError(f"task {task_name!r} is already registered")
            registered: Task[Any, Any] = Task(
                self,
                function,
                name=task_name,
                queue=queue or self.default_queue,
                max_attempts=max_attempts,
                retry_backoff=retry_backoff,
                timeout=timeout,
                priority=priority,
            )
            self.tasks[task_name] = registered
            return registered

        return register(fn) if fn is not None else register

    def periodic(
        self,
        schedule: str,
        *,
        name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **task_options: Any,
    ) -> Callable[[Callable[..., Any] | Task[Any, Any]], Task[Any, Any]]:
        """Run a task on a cron schedule (5 fields, UTC, database clock).

        Each tick is enqueued exactly once however many workers run; see the
        README for what happens to ticks missed while no worker ran.
        """

        def register(target: Callable[..., Any] | Task[Any, Any]) -> Task[Any, Any]:
            task = target if isinstance(target, Task) else self.task(name=name, **task_options)(target)
            periodic_name = name or task.name
            if periodic_name in self.periodics:
                raise ValueError(f"periodic {periodic_name!r} is already registered")
            self.periodics[periodic_name] = Periodic(periodic_name, schedule, task, tuple(args), dict(kwargs or {}))
            return task

        return register

    def resolve(self, task: str | Task[Any, Any]) -> Task[Any, Any] | None:
        if isinstance(task, Task):
            return task
        return self.tasks.get(task)

    def _options(
        self, task: str | Task[Any, Any], queue: str | None, priority: int | None, max_attempts: int | None
    ) -> JobOptions:
        known = self.resolve(task)
        if known is None:
            if not isinstance(task, str):
                raise TypeError(f"task must be a name or a currant.Task, not {type(task).__name__}")
            # An unregistered name is allowed: the producer may not import the worker's code.
            return JobOptions(
                task, self.default_queue if queue is None else queue, 0 if priority is None else priority, max_attempts
            )
        # max_attempts stays NULL unless given: the worker's task setting then decides.
        return JobOptions(
            known.name,
            known.queue if queue is None else queue,
            known.priority if priority is None else priority,
            max_attempts,
        )

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(f"unknown task {name!r}") from None

    # -- connections ---------------------------------------------------------

    def _sync_pool(self) -> ConnectionPool[Any]:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.dsn, min_size=1, max_size=8, kwargs={"autocommit": True}, open=True, name="currant"
                )
            pool = self._pool
        if self.auto_migrate and not self._schema_checked:
            with pool.connection() as conn:
                self._ensure_schema(conn)
        return pool

    async def _async_pool(self) -> AsyncConnectionPool[Any]:
        if self._apool is None:
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                self.dsn, min_size=1, max_size=8, kwargs={"autocommit": True}, open=False, name="currant-async"
            )
            await pool.open()
            self._apool = pool
        if self.auto_migrate and not self._schema_checked:
            await asyncio.to_thread(self._check_schema_once)
        return self._apool

    def _check_schema_once(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self._ensure_schema(conn)

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        if schema.current_version(conn, self.schema) != schema.latest_version(self.schema):
            schema.migrate(conn, self.schema)
        self._schema_checked = True

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new connection to this app's database (caller closes it)."""
        return psycopg.connect(self.dsn, **kwargs)

    def migrate(self) -> list[int]:
        """Create or upgrade the schema; idempotent and safe to run concurrently."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            applied = schema.migrate(conn, self.schema)
        self._schema_checked = True
        return applied

    async def amigrate(self) -> list[int]:
        """Async :meth:`migrate` (the DDL runs on a worker thread)."""
        return await asyncio.to_thread(self.migrate)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def aclose(self) -> None:
        if self._apool is not None:
            await self._apool.close()
            self._apool = None
        self.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running plans -------------------------------------------------------

    def _write(self, plan: Plan, connection: psycopg.Connection[Any] | None, *, transaction: bool) -> Any:
        if connection is not None:
            if isinstance(connection, psycopg.AsyncConnection):
                raise TypeError("an AsyncConnection needs the async API (aenqueue, aenqueue_many)")
            if transaction:
                with connection.transaction():
                    return run_plan(connection, plan)
            return run_plan(connection, plan)
        with self._sync_pool().connection() as conn:
            if not transaction:
                return _outcome_unknown_on_disconnect(conn, lambda: run_plan(conn, plan))
            conn.autocommit = False
            try:
                result = run_plan(conn, plan)
                _outcome_unknown_on_disconnect(conn, conn.commit)
                return result
            finally:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.UNKNOWN:
                    conn.rollback()
                    conn.autocommit = True

    async def _awrite(
        self, plan: Plan, connection: psycopg.AsyncConnection[Any] | None, *, transaction: bool
    ) -> Any:
        if connection is not None:
            if not isinstance(connection, psycopg.AsyncConnection):
                raise TypeError("a sync Connection needs the sync API (enqueue, enqueue_many)")
            if transaction:
                async with connection.transaction():
                    return await arun_plan(connection, plan)
            return await arun_plan(connection, plan)
        pool = await self._async_pool()
        async with pool.connection() as conn:
            if not transaction:
                try:
                    return await arun_plan(conn, plan)
                except psycopg.OperationalError as exc:
                    if not (conn.closed or conn.broken):
                        raise
                    raise EnqueueOutcomeUnknown(str(exc)) from exc
            await conn.set_autocommit(False)
            try:
                result = await arun_plan(conn, plan)
                try:
                    await conn.commit()
                except psycopg.OperationalError as exc:
                    if not (conn.closed or conn.broken):
                        raise
                    raise EnqueueOutcomeUnknown(str(exc)) from exc
                return result
            finally:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.UNKNOWN:
                    await conn.rollback()
                    await conn.set_autocommit(True)

    def _read(self, statement: str, params: Mapping[str, Any] | None, fetch: str = "all") -> Any:
        with self._sync_pool().connection() as conn:
            cur = conn.execute(statement, params)
            return cur.fetchone() if fetch == "one" else cur.fetchall()

    async def _aread(self, statement: str, params: Mapping[str, Any] | None, fetch: str = "all") -> Any:
        pool = await self._async_pool()
        async with pool.connection() as conn:
            cur = await conn.execute(statement, params)
            return await cur.fetchone() if fetch == "one" else await cur.fetchall()

    # -- producer API --------------------------------------------------------

    def _enqueue_plan(
        self,
        task: str | Task[Any, Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        queue: str | None,
        priority: int | None,
        run_at: datetime | None,
        delay: float | timedelta | None,
        unique_key: str | None,
        max_attempts: int | None,
    ) -> Plan:
        return enqueue_plan(
            self.sql,
            self.channel,
            self._options(task, queue, priority, max_attempts),
            args,
            kwargs,
            run_at=run_at,
            delay=delay,
            unique_key=unique_key,
            max_payload=self.max_payload_size,
        )

    def enqueue(
        self,
        task: str | Task[Any, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        unique_key: str | None = None,
        max_attempts: int | None = None,
        connection: psycopg.Connection[Any] | None = None,
    ) -> int:
        """Enqueue one job and return its id (one round trip).

        With ``connection=``, the job is part of the caller's transaction. With
        ``unique_key``, a live job with the same key is not duplicated: its id
        is returned. Raises :class:`EnqueueOutcomeUnknown` if the connection
        died while the job was committing.
        """
        plan = self._enqueue_plan(task, args, kwargs, queue, priority, run_at, delay, unique_key, max_attempts)
        return int(self._write(plan, connection, transaction=False))

    async def aenqueue(
        self,
        task: str | Task[Any, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        unique_key: str | None = None,
        max_attempts: int | None = None,
        connection: psycopg.AsyncConnection[Any] | None = None,
    ) -> int:
        """Async :meth:`enqueue`."""
        plan = self._enqueue_plan(task, args, kwargs, queue, priority, run_at, delay, unique_key, max_attempts)
        return int(await self._awrite(plan, connection, transaction=False))

    def enqueue_many(
        self,
        task: str | Task[Any, Any],
        items: Iterable[Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        connection: psycopg.Connection[Any] | None = None,
    ) -> list[int]:
        """Enqueue many jobs in one transaction by binary COPY; returns their ids in order.

        Items are args tuples, ``(args, kwargs)`` pairs, or :class:`currant.Item`
        for per-job options. Every item is encoded before any I/O: a bad one
        raises an error naming it and nothing is inserted.
        """
        plan = enqueue_many_plan(
            self.sql, self.channel, self._options(task, queue, priority, max_attempts), items,
            max_payload=self.max_payload_size,
        )
        return list(self._write(plan, connection, transaction=True))

    async def aenqueue_many(
        self,
        task: str | Task[Any, Any],
        items: Iterable[Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        connection: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[int]:
        """Async :meth:`enqueue_many`."""
        plan = enqueue_many_plan(
            self.sql, self.channel, self._options(task, queue, priority, max_attempts), items,
            max_payload=self.max_payload_size,
        )
        return list(await self._awrite(plan, connection, transaction=True))

    # -- inspection and control ----------------------------------------------

    def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or None if there is none (or it was pruned)."""
        return _job_from_row(self._read(self.sql["get_job"], {"id": job_id}, "one"))

    async def aget_job(self, job_id: int) -> Job | None:
        return _job_from_row(await self._aread(self.sql["get_job"], {"id": job_id}, "one"))

    def cancel(self, job_id: int) -> str:
        """Cancel a job. Returns what happened:

        ``"cancelled"`` (it was waiting and will never run), ``"cancel_requested"``
        (it is running; its worker is told to stop), ``"already_<state>"`` (it had
        finished: nothing changed), or ``"not_found"``.
        """
        return _cancel_outcome(self._read(self.sql["cancel"], {"id": job_id, "channel": self.channel}, "one"))

    async def acancel(self, job_id: int) -> str:
        return _cancel_outcome(
            await self._aread(self.sql["cancel"], {"id": job_id, "channel": self.channel}, "one")
        )

    def retry(self, job_id: int) -> bool:
        """Queue a failed or cancelled job again; False if it was in no such state."""
        return self._read(self.sql["retry"], {"id": job_id, "channel": self.channel}, "one") is not None

    async def aretry(self, job_id: int) -> bool:
        return await self._aread(self.sql["retry"], {"id": job_id, "channel": self.channel}, "one") is not None

    def stats(self) -> dict[str, Any]:
        """Counts per queue and state, and per queue the age in seconds of the oldest ready job."""
        return _stats_from_rows(self._read(self.sql["stats"], None))

    async def astats(self) -> dict[str, Any]:
        return _stats_from_rows(await self._aread(self.sql["stats"], None))

    def list_jobs(self, state: str, *, queue: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Newest jobs in a state (the admin CLI's ``failed`` listing)."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; one of {', '.join(STATES)}")
        rows = self._read(self.sql["list_jobs"], {"state": state, "queue": queue, "limit": limit})
        keys = ("id", "task", "queue", "state", "attempts", "max_attempts", "enqueued_at", "finished_at", "last_error")
        return [dict(zip(keys, row)) for row in rows]

    def purge(self, state: str, *, queue: str | None = None, older_than: float | None = None) -> int:
        """Delete jobs in a state (optionally of one queue, older than N seconds); returns how many.

        Running jobs cannot be purged: their workers hold them (cancel them instead).
        """
        if state not in STATES or state == "running":
            raise ValueError(f"cannot purge state {state!r}; one of {', '.join(s for s in STATES if s != 'running')}")
        with self._sync_pool().connection() as conn:
            cur = conn.execute(self.sql["purge"], {"state": state, "queue": queue, "older_than": older_than})
            return int(cur.rowcount)


def _outcome_unknown_on_disconnect(conn: psycopg.Connection[Any], action: Callable[[], Any]) -> Any:
    """Run the committing step; a connection lost during it leaves the outcome unknown.

    An error the server answered (a deadlock, a cancelled statement) means the
    transaction did not commit: that stays a plain error.
    """
    try:
        return action()
    except psycopg.OperationalError as exc:
        if not (conn.closed or conn.broken):
            raise
        raise EnqueueOutcomeUnknown(
            f"the connection failed while the enqueue was committing; the job may or may not exist: {exc}"
        ) from exc


def _job_from_row(row: Sequence[Any] | None) -> Job | None:
    if row is None:
        return None
    (job_id, task, queue, state, attempts, max_attempts, priority, result, errors, enqueued_at,
     started_at, finished_at, run_at, cancel_requested, unique_key, rescues, _worker, db_now) = row
    if state == "queued" and run_at > db_now:
        state = "scheduled"
    errors = errors or []
    last = errors[-1] if errors else None
    error = None
    if last is not None and state in ("failed", "retrying", "cancelled"):
        error = last.get("error")
        if last.get("traceback"):
            error = f"{error}\n{last['traceback']}"
    return Job(
        id=job_id,
        task=task,
        queue=queue,
        state=state,
        attempts=attempts,
        max_attempts=max_attempts,
        priority=priority,
        result=None if result is None else codec.unpack_value(bytes(result)),
        error=error,
        errors=errors,
        enqueued_at=enqueued_at,
        started_at=started_at,
        finished_at=finished_at,
        run_at=run_at,
        cancel_requested=cancel_requested,
        unique_key=unique_key,
        rescues=rescues,
    )


def _cancel_outcome(row: Sequence[Any] | None) -> str:
    if row is None:
        return "not_found"
    before, changed, _notified = row
    if not changed:
        return f"already_{before}"
    return "cancel_requested" if before == "running" else "cancelled"


def _stats_from_rows(rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    queues: dict[str, dict[str, Any]] = {}
    for queue, state, count, oldest in rows:
        entry = queues.setdefault(queue, {"states": dict.fromkeys(STATES, 0), "oldest_queued_age": None})
        entry["states"][state] = count
        if oldest is not None:
            entry["oldest_queued_age"] = float(oldest)
    totals = dict.fromkeys(STATES, 0)
    for entry in queues.values():
        for state, count in entry["states"].items():
            totals[state] += count
    return {"queues": queues, "totals": totals}
