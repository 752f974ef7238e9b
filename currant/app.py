"""The App: where jobs live, which tasks exist, and the API to enqueue and steer jobs.

Every operation is defined once, as a plan (:mod:`currant.enqueue`,
:mod:`currant.control`), and each public method hands it to the sync or the
async driver (:mod:`currant.drivers`), which own the pools and the
transaction policy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

import psycopg

from . import codec, control, flow, schema
from . import dsn as dsns
from .drivers import DEFAULT_CONNECT_TIMEOUT, AsyncDriver, SyncDriver
from .enqueue import JobOptions
from .flow import Group
from .hooks import Hooks
from .job import Job
from .names import check_name
from .plans import Plan
from .producer import EnqueueAPI
from .sql import queries, quote_schema
from .task import BackoffPolicy, Periodic, Task, default_task_name

F = TypeVar("F", bound=Callable[..., Any])


DEFAULT_SCHEMA = "currant"
DEFAULT_QUEUE = "default"


class App(EnqueueAPI):
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
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        transaction_pooling: bool | None = None,
    ) -> None:
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
        self.default_queue = check_name("queue", default_queue)
        self.max_payload_size = max_payload_size
        self.auto_migrate = auto_migrate
        self.connect_timeout = connect_timeout
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.periodics: dict[str, Periodic] = {}
        self.hooks = Hooks()
        self._dsn = dsns.check(dsn) if dsn is not None else None
        # The DSN leads to a transaction-mode pooler (PgBouncer with pool_mode =
        # transaction): no server-side prepared statements, no session state.
        # Default: $CURRANT_TRANSACTION_POOLING (set by the worker's
        # --transaction-pooling for its children, and handy for producers).
        if transaction_pooling is None:
            transaction_pooling = os.environ.get("CURRANT_TRANSACTION_POOLING", "") not in ("", "0")
        self.transaction_pooling = transaction_pooling
        self._bind(schema or os.environ.get("CURRANT_SCHEMA") or DEFAULT_SCHEMA)

    def _bind(self, schema: str) -> None:
        quote_schema(schema)  # validate now, not at first use
        self.schema = schema
        self.sql = queries(schema)
        self.channel = f"currant_{schema}"
        pooled = self.transaction_pooling
        self._sync = SyncDriver(lambda: self.dsn, schema, self.auto_migrate, self.connect_timeout, pooled)
        self._async = AsyncDriver(lambda: self.dsn, schema, self.auto_migrate, self.connect_timeout, pooled)

    def configure(
        self, *, dsn: str | None = None, schema: str | None = None, transaction_pooling: bool | None = None
    ) -> None:
        """Point the app at another database or schema (the worker's ``--dsn`` and
        ``--schema`` do this). Meant for before first use: open pools are closed."""
        self._sync.close()
        if dsn is not None:
            self._dsn = dsns.check(dsn)
        if transaction_pooling is not None:
            self.transaction_pooling = transaction_pooling
        self._async.close_from_sync()
        self._bind(schema or self.schema)

    # -- configuration -------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The connection string, resolved (and the embedded server started) on first use."""
        if self._dsn is None:
            from_env = os.environ.get("CURRANT_DSN")
            self._dsn = dsns.check(from_env) if from_env else None
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
        rate_limit: str | None = None,
        max_running: int | None = None,
        limit_key: str | Callable[..., Any] | None = None,
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
        rate_limit: str | None = None,
        max_running: int | None = None,
        limit_key: str | Callable[..., Any] | None = None,
    ) -> Any:
        """Register a function as a task (``@app.task`` or ``@app.task(name=..., ...)``).

        ``rate_limit`` ("100/s", "10/m", "1000/h") and ``max_running`` hold for
        all workers together; with ``limit_key`` (an argument's name, or a
        function of the job's arguments) they hold per key instead.
        """

        def register(function: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or default_task_name(function)
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
                rate_limit=rate_limit,
                max_running=max_running,
                limit_key=limit_key,
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

    def add_hook(self, hook: Any) -> Any:
        """Run ``hook``'s methods around enqueues and jobs (see :mod:`currant.hooks`)."""
        return self.hooks.add(hook)

    def resolve(self, task: str | Task[Any, Any]) -> Task[Any, Any] | None:
        if isinstance(task, Task):
            return task
        return self.tasks.get(task)

    def job_options(
        self, task: str | Task[Any, Any], queue: str | None, priority: int | None, max_attempts: int | None
    ) -> JobOptions:
        """Options of a job of ``task``: the ones given, else the task's defaults."""
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
            known.limit,
            task_known=True,
        )

    # -- connections ---------------------------------------------------------

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new connection to this app's database (caller closes it)."""
        return psycopg.connect(self.dsn, **kwargs)

    def migrate(self) -> list[int]:
        """Create or upgrade the schema; idempotent and safe to run concurrently."""
        with self._sync.direct() as conn:
            applied: list[int] = self._sync.run_on(conn, schema.migrate(self.schema), transaction=True)
        self._sync.schema_checked = self._async.schema_checked = True
        return applied

    async def amigrate(self) -> list[int]:
        async with self._async.direct() as conn:
            applied: list[int] = await self._async.run_on(conn, schema.migrate(self.schema), transaction=True)
        self._sync.schema_checked = self._async.schema_checked = True
        return applied

    def close(self) -> None:
        """Close the app's connection pools (sync and async)."""
        self._sync.close()
        self._async.close_from_sync()

    async def aclose(self) -> None:
        await self._async.close()
        self._sync.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def run_plan(self, plan: Plan, connection: psycopg.Connection[Any] | None = None, *, write: bool = False) -> Any:
        """Run a plan (see :mod:`currant.plans`) on the app's pool, or in the caller's ``connection``.

        For code built on Currant's statements (the dashboard, integrations):
        the same pools, timeouts and error policy as the App's own methods.
        """
        return self._sync.run(plan, connection, write=write)

    async def arun_plan(
        self, plan: Plan, connection: psycopg.AsyncConnection[Any] | None = None, *, write: bool = False
    ) -> Any:
        """Async :meth:`run_plan`."""
        return await self._async.run(plan, connection, write=write)

    # -- inspection and control ----------------------------------------------

    def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or None if there is none (or it was pruned)."""
        job: Job | None = self._sync.run(control.get_job(self.sql, job_id))
        return job

    async def aget_job(self, job_id: int) -> Job | None:
        job: Job | None = await self._async.run(control.get_job(self.sql, job_id))
        return job

    def cancel(self, job_id: int) -> str:
        """Cancel a job. Returns what happened:

        ``"cancelled"`` (it was waiting and will never run), ``"cancel_requested"``
        (it is running; its worker is told to stop), ``"already_<state>"`` (it had
        finished: nothing changed), or ``"not_found"``.
        """
        return str(self._sync.run(control.cancel(self.sql, self.channel, job_id)))

    async def acancel(self, job_id: int) -> str:
        return str(await self._async.run(control.cancel(self.sql, self.channel, job_id)))

    def retry(self, job_id: int) -> bool:
        """Queue a failed or cancelled job again; False if it was in no such state."""
        return bool(self._sync.run(control.retry(self.sql, self.channel, job_id)))

    async def aretry(self, job_id: int) -> bool:
        return bool(await self._async.run(control.retry(self.sql, self.channel, job_id)))

    def stats(self) -> dict[str, Any]:
        """Counts per queue and state, and per queue the age in seconds of the oldest ready job."""
        result: dict[str, Any] = self._sync.run(control.stats(self.sql))
        return result

    async def astats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._async.run(control.stats(self.sql))
        return result

    def list_jobs(
        self, state: str, *, queue: str | None = None, task: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """The newest jobs in a state, optionally of one queue and task."""
        rows: list[dict[str, Any]] = self._sync.run(control.list_jobs(self.sql, state, queue, task, limit))
        return rows

    def workers(self) -> list[dict[str, Any]]:
        """The live workers: host, pid, queues, concurrency, jobs held at the last heartbeat, when that was."""
        rows: list[dict[str, Any]] = self._sync.run(control.list_workers(self.sql))
        return rows

    def get_group(self, group_id: int) -> Group | None:
        """A group's progress: its size, members by state, its callback and the callback's state."""
        group: Group | None = self._sync.run(flow.get_group(self.sql, group_id))
        return group

    async def aget_group(self, group_id: int) -> Group | None:
        group: Group | None = await self._async.run(flow.get_group(self.sql, group_id))
        return group

    def pause(self, queue: str) -> bool:
        """Stop workers claiming from ``queue`` (running jobs finish); False if it was paused already."""
        return bool(self._sync.run(flow.pause(self.sql, queue)))

    async def apause(self, queue: str) -> bool:
        return bool(await self._async.run(flow.pause(self.sql, queue)))

    def resume(self, queue: str) -> bool:
        """Let workers claim from ``queue`` again; False if it was not paused."""
        return bool(self._sync.run(flow.resume(self.sql, self.channel, queue)))

    async def aresume(self, queue: str) -> bool:
        return bool(await self._async.run(flow.resume(self.sql, self.channel, queue)))

    def paused_queues(self) -> dict[str, Any]:
        """The paused queues and since when."""
        paused: dict[str, Any] = self._sync.run(flow.paused(self.sql))
        return paused

    def limits(self) -> list[dict[str, Any]]:
        """The rate and concurrency limits the workers declared, with their queued and running jobs."""
        rows: list[dict[str, Any]] = self._sync.run(control.list_limits(self.sql))
        return rows

    def purge(self, state: str, *, queue: str | None = None, older_than: float | None = None) -> int:
        """Delete jobs in a state (optionally of one queue, older than N seconds); returns how many.

        Running jobs cannot be purged: their workers hold them (cancel them instead).
        """
        return int(self._sync.run(control.purge(self.sql, state, queue, older_than)))
