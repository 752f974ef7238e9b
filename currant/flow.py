"""Workflows (groups with a callback, chains) and paused queues, as plans.

A *group* is jobs enqueued together (one transaction; one binary COPY per
task) and, optionally, a callback job that waits for every member and runs
once all have finished, however they ended; it receives ``group_id`` and
``member_ids`` (and, with ``pass_results``, ``results``: member id to
result). A *chain* is steps that each wait for the one before, and may
receive its result first among their arguments. Both are ordinary jobs with
``depends_on`` (see :mod:`currant.dependency`), so the database releases
them, exactly once, in the transaction that finishes their parents.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .dependency import Dependency
from .names import check_job_id, check_name
from .plans import Plan


class Call(NamedTuple):
    """A task with its arguments and options, not enqueued yet: ``task.s(*args, **kwargs)``."""

    task: Any  # a currant.Task or a task name
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = {}
    options: Mapping[str, Any] = {}  # queue, priority, max_attempts

    def using(self, **options: Any) -> Call:
        """The same call with enqueue options: ``add.s(1, 2).using(queue="math")``."""
        unknown = set(options) - {"queue", "priority", "max_attempts"}
        if unknown:
            raise TypeError(f"a workflow step takes queue, priority and max_attempts, not {sorted(unknown)}")
        return self._replace(options={**self.options, **options})


class Group(NamedTuple):
    """A group as ``App.get_group`` reads it."""

    id: int
    size: int
    states: dict[str, int]  # members by state
    callback_id: int | None
    callback_state: str | None

    @property
    def finished(self) -> int:
        return sum(self.states.get(state, 0) for state in ("succeeded", "failed", "cancelled"))

    @property
    def done(self) -> bool:
        """Every member has finished (the callback, if any, may still be running)."""
        return self.finished == self.size


# How an App enqueues one step inside a plan: (call, dependency or None) -> plan returning its id.
EnqueueOne = Callable[[Call, Dependency | None], Plan]
# ... and many jobs of one task: (task, items, options) -> plan returning their ids.
EnqueueMany = Callable[[Any, list[Any], Mapping[str, Any]], Plan]


def plan_group(
    sql: Mapping[str, str],
    members: Sequence[Call] | tuple[Any, Iterable[Any]],
    callback: Call | None,
    pass_results: bool,
    enqueue_one: EnqueueOne,
    enqueue_many: EnqueueMany,
) -> Plan:
    """Create the group, enqueue its members and its callback; returns (group id, member ids, callback id)."""
    if isinstance(members, tuple) and len(members) == 2 and not isinstance(members[0], Call):
        task, items = members
        batches: list[tuple[Any, list[Any], Mapping[str, Any]]] = [(task, list(items), {})]
        size = len(batches[0][1])
    else:
        calls = list(members)
        if not all(isinstance(call, Call) for call in calls):
            raise TypeError("group members are task.s(...) calls, or (task, items) for many jobs of one task")
        batches = _by_task(calls)
        size = len(calls)
    if size == 0:
        raise ValueError("a group needs at least one member")
    return _group_steps(sql, batches, size, callback, pass_results, enqueue_one, enqueue_many)


def _by_task(calls: list[Call]) -> list[tuple[Any, list[Any], Mapping[str, Any]]]:
    """Consecutive calls of one task with the same options go in one COPY."""
    batches: list[tuple[Any, list[Any], Mapping[str, Any]]] = []
    for call in calls:
        item = (tuple(call.args), dict(call.kwargs))
        if batches and batches[-1][0] is call.task and batches[-1][2] == call.options:
            batches[-1][1].append(item)
        else:
            batches.append((call.task, [item], call.options))
    return batches


def _group_steps(
    sql: Mapping[str, str],
    batches: list[tuple[Any, list[Any], Mapping[str, Any]]],
    size: int,
    callback: Call | None,
    pass_results: bool,
    enqueue_one: EnqueueOne,
    enqueue_many: EnqueueMany,
) -> Plan:
    (group_id,) = yield ("one", sql["create_group"], {"size": size})
    member_ids: list[int] = []
    for task, items, options in batches:
        member_ids += yield from enqueue_many(task, items, options)
    yield ("rowcount", sql["tag_group"], {"id": group_id, "ids": member_ids})
    callback_id = None
    if callback is not None:
        call = callback._replace(kwargs={**callback.kwargs, "group_id": group_id, "member_ids": member_ids})
        dependency = Dependency(tuple(member_ids), "r", "k" if pass_results else None)
        callback_id = yield from enqueue_one(call, dependency)
        yield ("rowcount", sql["set_group_callback"], {"id": group_id, "callback": callback_id})
    return int(group_id), member_ids, callback_id


def plan_chain(steps: Sequence[Call], pass_results: bool, enqueue_one: EnqueueOne) -> Plan:
    """Each step waits for the one before it (and is cancelled if it fails); returns the steps' ids."""
    if not steps or not all(isinstance(step, Call) for step in steps):
        raise TypeError("a chain is one or more task.s(...) calls")
    return _chain_steps(list(steps), pass_results, enqueue_one)


def _chain_steps(steps: list[Call], pass_results: bool, enqueue_one: EnqueueOne) -> Plan:
    ids: list[int] = []
    for step in steps:
        dependency = Dependency((ids[-1],), "c", "f" if pass_results else None) if ids else None
        ids.append((yield from enqueue_one(step, dependency)))
    return ids


def get_group(sql: Mapping[str, str], group_id: int) -> Plan:
    return _get_group(sql["get_group"], {"id": check_job_id(group_id)})


def _get_group(statement: str, params: dict[str, Any]) -> Plan:
    row = yield ("one", statement, params)
    if row is None:
        return None
    group_id, size, callback_id, _created_at, callback_state, states = row
    return Group(group_id, size, dict(states), callback_id, callback_state)


def pause(sql: Mapping[str, str], queue: str) -> Plan:
    return _changed(sql["pause_queue"], {"queue": check_name("queue", queue)})


def resume(sql: Mapping[str, str], channel: str, queue: str) -> Plan:
    return _changed(sql["resume_queue"], {"queue": check_name("queue", queue), "channel": channel})


def _changed(statement: str, params: dict[str, Any]) -> Plan:
    """True if the statement changed something (returned a row)."""
    return (yield ("one", statement, params)) is not None


def paused(sql: Mapping[str, str]) -> Plan:
    rows = yield ("all", sql["paused_queues"], None)
    return {name: paused_at for name, paused_at in rows}
