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
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import psycopg

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
    ``connection``: run on your open connection, inside its transaction (a
    test that never commits, as Django's ``TestCase``, sees its jobs run);
    by default a connection of the drain's own, in autocommit.
    """
    budget = check_budget(advance_clock)
    served = _queues(app, queues)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("drain() was called inside a running event loop: use `await adrain(app)` there")
    if connection is not None:
        return _drain_on(app, cast("psycopg.Connection[Any]", _Bound(connection)), served, fail_fast, budget)
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        return _drain_on(app, conn, served, fail_fast, budget)


def _drain_on(
    app: App, conn: psycopg.Connection[Any], served: list[str], fail_fast: bool, budget: float
) -> DrainReport:
    session = Session()
    loop: asyncio.AbstractEventLoop | None = None
    register_array_dumpers(conn)
    with conn.transaction():
        run_plan(conn, ensure(app.schema))
    try:
        plan = steps(app.sql, app.tasks, served, app.channel, fail_fast, budget, session)
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
            elif task.is_async:
                loop = loop or asyncio.new_event_loop()
                result = (
                    loop.run_until_complete(attempt.run_async(task, job[3], job[4], _context(job), capture)),
                    capture,
                )
            else:
                result = (_run_sync(task, job, capture), capture)
    finally:
        if loop is not None:
            loop.close()
        if session.worker_id is not None:
            conn.execute(app.sql["deregister_worker"], {"worker": session.worker_id})
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
        bound = cast("psycopg.AsyncConnection[Any]", _ABound(connection))
        return await _adrain_on(app, bound, served, fail_fast, budget)
    conn = await psycopg.AsyncConnection.connect(await asyncio.to_thread(lambda: app.dsn), autocommit=True)
    async with conn:
        return await _adrain_on(app, conn, served, fail_fast, budget)


async def _adrain_on(
    app: App, conn: psycopg.AsyncConnection[Any], served: list[str], fail_fast: bool, budget: float
) -> DrainReport:
    session = Session()
    register_array_dumpers(conn)
    async with conn.transaction():
        await arun_plan(conn, ensure(app.schema))
    try:
        plan = steps(app.sql, app.tasks, served, app.channel, fail_fast, budget, session)
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
            elif task.is_async:
                result = (await attempt.run_async(task, job[3], job[4], _context(job), capture), capture)
            else:
                # A thread of its own: Django (and others) refuse sync work where a loop runs.
                copied = contextvars.copy_context()
                run = await asyncio.to_thread(copied.run, _run_sync, task, job, capture)
                result = (run, capture)
    finally:
        if session.worker_id is not None:
            await conn.execute(app.sql["deregister_worker"], {"worker": session.worker_id})
    if session.failure is not None:
        raise session.failure
    return session.report


class _Bound:
    """A caller's connection, for the drain's steps: their own server-side-binding
    cursor each (the claim's rows come back binary, which a client-side cursor,
    such as Django's default, cannot do); the rest is the connection's."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.adapters = conn.adapters
        self.transaction = conn.transaction

    def execute(self, query: Any, params: Any = None, *, binary: bool = False) -> psycopg.Cursor[Any]:
        return psycopg.Cursor(self.conn).execute(query, params, binary=binary)


class _ABound:
    """Async :class:`_Bound`."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.adapters = conn.adapters
        self.transaction = conn.transaction

    async def execute(self, query: Any, params: Any = None, *, binary: bool = False) -> psycopg.AsyncCursor[Any]:
        return await psycopg.AsyncCursor(self.conn).execute(query, params, binary=binary)


def _queues(app: App, queues: Sequence[str] | None) -> list[str]:
    if queues is None:
        served = [app.default_queue]
        served += sorted({task.queue for task in app.tasks.values()} - {app.default_queue})
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
