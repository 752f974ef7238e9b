"""Testing code that uses Currant: run jobs in the test, against the real SQL.

``drain(app)`` runs every ready job in the calling process through the very
statements a worker sends (see :mod:`currant.testing.drain`), so a test
sees what production does: dependencies, limits, retries, the database's
clock. ``adrain`` is its async twin. The pytest plugin
(:mod:`currant.testing.plugin`, registered by the ``pytest11`` entry point)
gives ``currant_dsn`` and ``currant_app`` fixtures.

Sync handlers run in the calling thread under :func:`drain` and on a worker
thread under :func:`adrain` (never on a thread with a running event loop,
which Django's ORM refuses); async handlers run on an event loop. A sync
task's ``timeout`` is not enforced here (a thread cannot be stopped).
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg.pq import TransactionStatus

from ..job import JobContext, _set_current
from ..plans import arun_plan, arun_step, run_plan, run_step
from ..schema import ensure
from ..worker import attempt, outcomes
from ..worker.arrays import register_array_dumpers
from ..worker.lanes import Claimed
from .drain import DrainedJob, DrainReport, Session, _Capture, check_budget, steps

if TYPE_CHECKING:
    from ..app import App

__all__ = ["DrainReport", "DrainedJob", "adrain", "drain"]

# Where each App's test clock stands after a drain on a connection of its own
# (seconds ahead, by DSN and schema): that connection, and its session's
# offset, is gone, and the next drain must not move the clock back.
_clocks: weakref.WeakKeyDictionary[App, dict[tuple[str, str], float]] = weakref.WeakKeyDictionary()


def drain(
    app: App,
    *,
    queues: Sequence[str] | None = None,
    fail_fast: bool = True,
    advance_clock: float | timedelta | None = None,
    connection: psycopg.Connection[Any] | None = None,
) -> DrainReport:
    """Run every ready job of ``app`` here, until nothing is ready; returns what ran.

    ``queues``: the queues to drain (default: the app's default queue and
    every queue its tasks declare). ``fail_fast``: the first exception a
    handler raises (other than ``currant.Retry`` and ``currant.Discard``) is
    recorded, like a worker would, then raised here with its traceback.
    ``advance_clock``: seconds (or a timedelta) the database clock may be
    moved forward, in steps to the next due job, so delayed jobs, retries
    and rate-limited jobs run without waiting; the report says how far it went.
    The clock never moves back: a drain goes on from where the last one on
    the same connection (or, without one, for the same App, DSN and schema,
    until the pytest plugin forgets it after the test) left it, so a job due
    on the moved clock runs in a later drain. A caller's connection keeps its
    offset (a session setting) until its transaction rolls back or it closes.
    ``connection``: run on your open connection, inside its transaction (a
    test that never commits, as Django's ``TestCase``, sees its jobs run);
    by default a connection of the drain's own, in autocommit. Each job then
    runs in a savepoint, so a handler's failed statement undoes only its own
    work, and is raised (fail_fast) rather than hidden by the aborted transaction.
    """
    budget = check_budget(advance_clock)
    served = _queues(app, queues)
    if connection is not None and not isinstance(connection, psycopg.Connection):
        raise TypeError(_wrong_connection(connection, "psycopg.Connection"))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("drain() was called inside a running event loop: use `await adrain(app)` there")
    if connection is not None:
        return _drain_on(app, cast("psycopg.Connection[Any]", _Bound(connection)), served, fail_fast, budget, True)
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        return _drain_on(app, conn, served, fail_fast, budget, False)


def _drain_on(
    app: App, conn: psycopg.Connection[Any], served: list[str], fail_fast: bool, budget: float, caller: bool
) -> DrainReport:
    session = Session()
    loop: asyncio.AbstractEventLoop | None = None
    register_array_dumpers(conn)
    with conn.transaction():
        run_plan(conn, ensure(app.schema))
    clock_start = 0.0 if caller else _clocks.get(app, {}).get((app.dsn, app.schema), 0.0)
    try:
        plan = steps(app.sql, app.tasks, served, app.channel, fail_fast, budget, session, clock_start)
        result: Any = None
        while True:
            try:
                step = plan.send(result)
            except StopIteration:
                break
            if step[0] != "run":
                result = run_step(conn, step)  # type: ignore[arg-type]
                continue
            job: Claimed = step[1]
            capture = _Capture(app.hooks)
            task, unrunnable = _task(app, job)
            if task is None:
                result = (unrunnable, None)
                continue
            with _savepoint(app, conn, caller):
                if task.is_async:
                    loop = loop or asyncio.new_event_loop()
                    run = attempt.run_async(task, job[3], job[4], _context(job), capture)
                    result = (loop.run_until_complete(run), capture)
                else:
                    result = (_run_sync(task, job, capture), capture)
    finally:
        if loop is not None:
            loop.close()
        # An aborted transaction (the caller's) refuses it, and would hide the error
        # on its way out; its rollback takes the worker row registered in it anyway.
        if session.worker_id is not None and conn.info.transaction_status != TransactionStatus.INERROR:
            conn.execute(app.sql["deregister_worker"], {"worker": session.worker_id})
    if not caller:
        _clocks.setdefault(app, {})[(app.dsn, app.schema)] = session.clock_offset
    if session.failure is not None:
        raise session.failure
    return session.report


async def adrain(
    app: App,
    *,
    queues: Sequence[str] | None = None,
    fail_fast: bool = True,
    advance_clock: float | timedelta | None = None,
    connection: psycopg.AsyncConnection[Any] | None = None,
) -> DrainReport:
    """Async :func:`drain`: async handlers run on the caller's loop, sync ones on a thread."""
    budget = check_budget(advance_clock)
    served = _queues(app, queues)
    if connection is not None:
        if not isinstance(connection, psycopg.AsyncConnection):
            raise TypeError(_wrong_connection(connection, "psycopg.AsyncConnection"))
        bound = cast("psycopg.AsyncConnection[Any]", _ABound(connection))
        return await _adrain_on(app, bound, served, fail_fast, budget, True)
    conn = await psycopg.AsyncConnection.connect(await asyncio.to_thread(lambda: app.dsn), autocommit=True)
    async with conn:
        return await _adrain_on(app, conn, served, fail_fast, budget, False)


async def _adrain_on(
    app: App, conn: psycopg.AsyncConnection[Any], served: list[str], fail_fast: bool, budget: float, caller: bool
) -> DrainReport:
    session = Session()
    register_array_dumpers(conn)
    async with conn.transaction():
        await arun_plan(conn, ensure(app.schema))
    clock_start = 0.0 if caller else _clocks.get(app, {}).get((app.dsn, app.schema), 0.0)
    try:
        plan = steps(app.sql, app.tasks, served, app.channel, fail_fast, budget, session, clock_start)
        result: Any = None
        while True:
            try:
                step = plan.send(result)
            except StopIteration:
                break
            if step[0] != "run":
                result = await arun_step(conn, step)  # type: ignore[arg-type]
                continue
            job: Claimed = step[1]
            capture = _Capture(app.hooks)
            task, unrunnable = _task(app, job)
            if task is None:
                result = (unrunnable, None)
                continue
            if caller and conn.info.transaction_status == TransactionStatus.INTRANS:
                await conn.execute(app.sql["drain_savepoint"])
            if task.is_async:
                result = (await attempt.run_async(task, job[3], job[4], _context(job), capture), capture)
            else:
                # A thread of its own: Django (and others) refuse sync work where a loop runs.
                copied = contextvars.copy_context()
                run = await asyncio.to_thread(copied.run, _run_sync, task, job, capture)
                result = (run, capture)
            if caller and conn.info.transaction_status in _IN_SAVEPOINT:
                await conn.execute(app.sql[_savepoint_end(conn.info.transaction_status)])
    finally:
        if session.worker_id is not None and conn.info.transaction_status != TransactionStatus.INERROR:
            await conn.execute(app.sql["deregister_worker"], {"worker": session.worker_id})
    if not caller:
        _clocks.setdefault(app, {})[(app.dsn, app.schema)] = session.clock_offset
    if session.failure is not None:
        raise session.failure
    return session.report


_IN_SAVEPOINT = (TransactionStatus.INTRANS, TransactionStatus.INERROR)


def _savepoint_end(status: TransactionStatus) -> str:
    return "drain_rollback_to_savepoint" if status == TransactionStatus.INERROR else "drain_release_savepoint"


@contextmanager
def _savepoint(app: App, conn: psycopg.Connection[Any], caller: bool) -> Iterator[None]:
    """One job's run inside a savepoint of the caller's open transaction (none otherwise:
    in autocommit a failed statement aborts nothing the drain needs)."""
    if not caller or conn.info.transaction_status != TransactionStatus.INTRANS:
        yield
        return
    conn.execute(app.sql["drain_savepoint"])
    yield  # the run step catches the handler's exceptions: the savepoint always ends here
    if conn.info.transaction_status in _IN_SAVEPOINT:
        conn.execute(app.sql[_savepoint_end(conn.info.transaction_status)])


def _wrong_connection(connection: Any, wanted: str) -> str:
    kind = f"{type(connection).__module__}.{type(connection).__qualname__}"
    hint = " (Django's connection wraps one: pass `connection.connection` after `connection.ensure_connection()`)"
    return f"connection must be a {wanted}, not {kind}{hint if hasattr(connection, 'ensure_connection') else ''}"


class _Bound:
    """A caller's connection, for the drain's steps: their own server-side-binding
    cursor each (the claim's rows come back binary, which a client-side cursor,
    such as Django's default, cannot do); the rest is the connection's."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.adapters = conn.adapters
        self.transaction = conn.transaction
        self.info = conn.info

    def execute(self, query: Any, params: Any = None, *, binary: bool = False) -> psycopg.Cursor[Any]:
        return psycopg.Cursor(self.conn).execute(query, params, binary=binary)


class _ABound:
    """Async :class:`_Bound`."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.adapters = conn.adapters
        self.transaction = conn.transaction
        self.info = conn.info

    async def execute(self, query: Any, params: Any = None, *, binary: bool = False) -> psycopg.AsyncCursor[Any]:
        return await psycopg.AsyncCursor(self.conn).execute(query, params, binary=binary)


def _queues(app: App, queues: Sequence[str] | None) -> list[str]:
    if queues is None:
        # A registry may know queues no task of it declared yet (Django's: its backend's QUEUES,
        # in their order; tasks are found as jobs name them, so .using(queue_name=...) would be missed).
        served = list(getattr(app.tasks, "queue_order", None) or [app.default_queue])
        declared = {app.default_queue} | {task.queue for task in app.tasks.values()}
        served += sorted(declared - set(served))
        return served
    if isinstance(queues, str) or not queues or not all(isinstance(queue, str) for queue in queues):
        raise ValueError(f"queues must be a non-empty list of queue names, got {queues!r}")
    return list(queues)


def _task(app: App, job: Claimed) -> tuple[Any, outcomes.Outcome | None]:
    """The job's task, or None and the outcome of a job that cannot run (the worker's rule)."""
    task = app.tasks.get(job[2])
    unrunnable = outcomes.unrunnable(job[2], task, job[5])
    return (None, unrunnable) if unrunnable is not None else (task, None)


def _context(job: Claimed) -> JobContext:
    job_id, attempt_number, name, _args, _kwargs, _error, headers, queue, max_attempts, waited = job
    return JobContext(job_id, attempt_number, name, queue, max_attempts, waited, headers)


def _run_sync(task: Any, job: Claimed, capture: _Capture) -> outcomes.Outcome | None:
    context = _context(job)
    _set_current(context)  # as on a lane: current_job() answers inside the handler
    try:
        return attempt.run_sync(task, job[3], job[4], context, capture)
    finally:
        _set_current(None)
