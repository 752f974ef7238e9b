"""The enqueue API of the App, sync and async, with the hooks around it.

Every method builds a plan (:mod:`currant.enqueue`) and hands it to the App's
sync or async driver. Enqueue hooks (:mod:`currant.hooks`) run around it only
when some are registered: otherwise the cost is one branch.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg

from .dependency import Dependency, check_dependency
from .enqueue import JobOptions, plan_enqueue, plan_enqueue_many
from .flow import Call, EnqueueMany, EnqueueOne, plan_chain, plan_group
from .hooks import EnqueueEvent, Hooks
from .plans import Plan

if TYPE_CHECKING:
    from .drivers import AsyncDriver, SyncDriver
    from .task import Task


class EnqueueAPI:
    """Mixed into :class:`currant.App`, which provides what is declared here."""

    sql: dict[str, str]
    channel: str
    max_payload_size: int
    hooks: Hooks
    _sync: SyncDriver
    _async: AsyncDriver

    def job_options(
        self, task: str | Task[Any, Any], queue: str | None, priority: int | None, max_attempts: int | None
    ) -> JobOptions:
        raise NotImplementedError

    def enqueue_plan(
        self,
        task: str | Task[Any, Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        unique_key: str | None = None,
        max_attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        dependency: Dependency | None = None,
        limit_key: str | None = None,
    ) -> Plan:
        """The plan of one enqueue, for callers that run it on a connection of their own
        (in a transaction, if the job has a dependency)."""
        return plan_enqueue(
            self.sql,
            self.channel,
            self.job_options(task, queue, priority, max_attempts),
            args,
            kwargs,
            run_at=run_at,
            delay=delay,
            unique_key=unique_key,
            max_payload=self.max_payload_size,
            headers=headers,
            dependency=dependency,
            limit_key=limit_key,
        )

    def _one(
        self, task: Any, args: Any, kwargs: Any, options: dict[str, Any], dependency: Dependency | None
    ) -> Callable[[dict[str, str]], Plan]:
        return lambda headers: self.enqueue_plan(
            task, args, kwargs, **options, headers=headers or None, dependency=dependency
        )

    def _many(
        self, items: Iterable[Any], options: JobOptions, dependency: Dependency | None, limit_key: str | None
    ) -> Callable[[dict[str, str]], Plan]:
        return lambda headers: plan_enqueue_many(
            self.sql,
            self.channel,
            options,
            items,
            max_payload=self.max_payload_size,
            headers=headers or None,
            dependency=dependency,
            limit_key=limit_key,
        )

    def _event(self, options: JobOptions, count: int, connection: Any) -> EnqueueEvent:
        return EnqueueEvent(options.task, options.queue, count, connection is not None)

    def _hooked(self, event: EnqueueEvent, plan: Callable[[dict[str, str]], Plan], run: Callable[[Plan], Any]) -> Any:
        """Run an enqueue with the enqueue hooks around it."""
        hooks = self.hooks
        hooks.before_enqueue(event)
        try:
            result = run(plan(event.headers))
        except BaseException as exc:
            event.error = exc
            hooks.after_enqueue(event)
            raise
        event.ids = result if isinstance(result, list) else [result]
        hooks.after_enqueue(event)
        return result

    async def _ahooked(
        self, event: EnqueueEvent, plan: Callable[[dict[str, str]], Plan], run: Callable[[Plan], Awaitable[Any]]
    ) -> Any:
        """Async :meth:`_hooked`."""
        hooks = self.hooks
        await hooks.abefore_enqueue(event)
        try:
            result = await run(plan(event.headers))
        except BaseException as exc:
            event.error = exc
            await hooks.aafter_enqueue(event)
            raise
        event.ids = result if isinstance(result, list) else [result]
        await hooks.aafter_enqueue(event)
        return result

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
        depends_on: Iterable[int] | None = None,
        on_parent_failure: str = "cancel",
        pass_results: str | None = None,
        limit_key: str | None = None,
        connection: psycopg.Connection[Any] | None = None,
    ) -> int:
        """Enqueue one job and return its id (one round trip).

        With ``connection=``, the job is part of the caller's transaction. With
        ``unique_key``, a live job with the same key is not duplicated: its id
        is returned. ``limit_key`` puts the job under that key of its task's
        limits (instead of the key the task works out from the arguments).
        Raises :class:`EnqueueOutcomeUnknown` if the connection died while
        the job was committing.
        """
        options = dict(
            queue=queue,
            priority=priority,
            run_at=run_at,
            delay=delay,
            unique_key=unique_key,
            max_attempts=max_attempts,
            limit_key=limit_key,
        )
        dependency = check_dependency(depends_on, on_parent_failure, pass_results)
        plan = self._one(task, args, kwargs, options, dependency)
        run = functools.partial(self._sync.run, connection=connection, transaction=dependency is not None, write=True)
        if self.hooks.watches_enqueue:
            event = self._event(self.job_options(task, queue, priority, max_attempts), 1, connection)
            return int(self._hooked(event, plan, run))
        return int(run(plan({})))

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
        depends_on: Iterable[int] | None = None,
        on_parent_failure: str = "cancel",
        pass_results: str | None = None,
        limit_key: str | None = None,
        connection: psycopg.AsyncConnection[Any] | None = None,
    ) -> int:
        """Async :meth:`enqueue`."""
        options = dict(
            queue=queue,
            priority=priority,
            run_at=run_at,
            delay=delay,
            unique_key=unique_key,
            max_attempts=max_attempts,
            limit_key=limit_key,
        )
        dependency = check_dependency(depends_on, on_parent_failure, pass_results)
        plan = self._one(task, args, kwargs, options, dependency)
        run = functools.partial(self._async.run, connection=connection, transaction=dependency is not None, write=True)
        if self.hooks.watches_enqueue:
            event = self._event(self.job_options(task, queue, priority, max_attempts), 1, connection)
            return int(await self._ahooked(event, plan, run))
        return int(await run(plan({})))

    def enqueue_many(
        self,
        task: str | Task[Any, Any],
        items: Iterable[Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        depends_on: Iterable[int] | None = None,
        on_parent_failure: str = "cancel",
        pass_results: str | None = None,
        limit_key: str | None = None,
        connection: psycopg.Connection[Any] | None = None,
    ) -> list[int]:
        """Enqueue many jobs in one transaction by binary COPY; returns their ids in order.

        Items are args tuples, ``(args, kwargs)`` pairs, or :class:`currant.Item`
        for per-job options. Every item is encoded before any I/O: a bad one
        raises an error naming it and nothing is inserted.
        """
        options = self.job_options(task, queue, priority, max_attempts)
        items = items if type(items) is list else list(items)
        dependency = check_dependency(depends_on, on_parent_failure, pass_results)
        plan = self._many(items, options, dependency, limit_key)
        run = functools.partial(self._sync.run, connection=connection, transaction=True, write=True)
        if self.hooks.watches_enqueue:
            return list(self._hooked(self._event(options, len(items), connection), plan, run))
        return list(run(plan({})))

    async def aenqueue_many(
        self,
        task: str | Task[Any, Any],
        items: Iterable[Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        depends_on: Iterable[int] | None = None,
        on_parent_failure: str = "cancel",
        pass_results: str | None = None,
        limit_key: str | None = None,
        connection: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[int]:
        """Async :meth:`enqueue_many`."""
        options = self.job_options(task, queue, priority, max_attempts)
        items = items if type(items) is list else list(items)
        dependency = check_dependency(depends_on, on_parent_failure, pass_results)
        plan = self._many(items, options, dependency, limit_key)
        run = functools.partial(self._async.run, connection=connection, transaction=True, write=True)
        if self.hooks.watches_enqueue:
            return list(await self._ahooked(self._event(options, len(items), connection), plan, run))
        return list(await run(plan({})))

    # -- workflows ---------------------------------------------------------------

    def _flow_enqueue(self) -> tuple[EnqueueOne, EnqueueMany]:
        def one(call: Call, dependency: Dependency | None) -> Plan:
            return self.enqueue_plan(call.task, call.args, call.kwargs, **call.options, dependency=dependency)

        def many(task: Any, items: list[Any], options: Mapping[str, Any]) -> Plan:
            get = options.get
            resolved = self.job_options(task, get("queue"), get("priority"), get("max_attempts"))
            return plan_enqueue_many(self.sql, self.channel, resolved, items, max_payload=self.max_payload_size)

        return one, many

    def group(
        self,
        members: Sequence[Call] | tuple[Any, Iterable[Any]],
        *,
        callback: Call | None = None,
        pass_results: bool = False,
        connection: psycopg.Connection[Any] | None = None,
    ) -> GroupIds:
        """Enqueue a group in one transaction: ``[task.s(...), ...]``, or ``(task, items)``
        for many jobs of one task by binary COPY. ``callback`` runs once every member has
        finished, with ``group_id`` and ``member_ids`` (and ``results``, member id to
        result, with ``pass_results``). Returns (group id, member ids, callback id)."""
        plan = plan_group(self.sql, members, callback, pass_results, *self._flow_enqueue())
        return GroupIds(*self._sync.run(plan, connection, transaction=True, write=True))

    async def agroup(
        self,
        members: Sequence[Call] | tuple[Any, Iterable[Any]],
        *,
        callback: Call | None = None,
        pass_results: bool = False,
        connection: psycopg.AsyncConnection[Any] | None = None,
    ) -> GroupIds:
        """Async :meth:`group`."""
        plan = plan_group(self.sql, members, callback, pass_results, *self._flow_enqueue())
        return GroupIds(*await self._async.run(plan, connection, transaction=True, write=True))

    def chain(
        self, steps: Sequence[Call], *, pass_results: bool = False, connection: psycopg.Connection[Any] | None = None
    ) -> list[int]:
        """Enqueue steps that each run after the one before succeeded (with its result
        first among their arguments, with ``pass_results``); a failed step cancels the
        rest. Returns the steps' ids."""
        plan = plan_chain(steps, pass_results, self._flow_enqueue()[0])
        return list(self._sync.run(plan, connection, transaction=True, write=True))

    async def achain(
        self,
        steps: Sequence[Call],
        *,
        pass_results: bool = False,
        connection: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[int]:
        """Async :meth:`chain`."""
        plan = plan_chain(steps, pass_results, self._flow_enqueue()[0])
        return list(await self._async.run(plan, connection, transaction=True, write=True))


class GroupIds(NamedTuple):
    """What ``App.group`` enqueued."""

    group_id: int
    member_ids: list[int]
    callback_id: int | None
