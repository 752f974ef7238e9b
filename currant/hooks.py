"""Hooks: users' (and Currant's own) code run around enqueues and around each job.

A hook is any object with some of these methods (all optional)::

    class MyHook:
        def on_enqueue(self, event: EnqueueEvent) -> None: ...
        def before_job(self, job: JobContext) -> None: ...
        def after_job(self, job: JobContext, outcome: JobOutcome) -> None: ...

``before_job`` and ``after_job`` run in the job's own execution context: on
the lane thread for a sync task, inside the task's coroutine for an async one,
so a hook may set context variables (a tracing span) that the handler sees.
A method may be ``async def`` only for async tasks' hooks; a coroutine
returned for a sync task is refused with a logged error.

A hook that raises is logged and ignored: it never fails, loses or delays the
job. With no hooks registered the worker pays one branch per job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .job import JobContext

log = logging.getLogger("currant.hooks")


@dataclass(frozen=True)
class EnqueueEvent:
    """What was enqueued: one job (``ids`` of length 1) or a bulk enqueue."""

    task: str
    queue: str
    ids: Sequence[int]
    transactional: bool  # inside the caller's transaction: visible only at its commit


@dataclass
class JobOutcome:
    """How an attempt ended, as the handler left it.

    ``status`` is ``"succeeded"``, ``"error"`` (raised; the database decides
    between retrying and failed by the attempt limit), ``"cancelled"`` or
    ``"unrunnable"`` (unknown task or bad payload). ``error`` is the recorded
    error text, if any; ``exception`` the exception itself.
    """

    status: str
    duration: float
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    result: Any = field(default=None, repr=False)


class Hooks:
    """The hooks of one App, called in registration order."""

    def __init__(self) -> None:
        self._enqueue: list[Any] = []
        self._before: list[Any] = []
        self._after: list[Any] = []

    def __bool__(self) -> bool:
        return bool(self._before or self._after)

    def add(self, hook: Any) -> Any:
        """Register a hook object; returns it (so this works as a class decorator on an instance)."""
        found = False
        for name, registry in (("on_enqueue", self._enqueue), ("before_job", self._before), ("after_job", self._after)):
            method = getattr(hook, name, None)
            if method is not None:
                registry.append(method)
                found = True
        if not found:
            raise TypeError(f"{hook!r} has none of on_enqueue, before_job, after_job")
        return hook

    @property
    def watches_enqueue(self) -> bool:
        return bool(self._enqueue)

    def enqueued(self, event: EnqueueEvent) -> None:
        for method in self._enqueue:
            _call(method, event)

    def before_job(self, job: JobContext) -> None:
        for method in self._before:
            _call(method, job)

    def after_job(self, job: JobContext, outcome: JobOutcome) -> None:
        for method in self._after:
            _call(method, job, outcome)

    async def abefore_job(self, job: JobContext) -> None:
        for method in self._before:
            await _acall(method, job)

    async def aafter_job(self, job: JobContext, outcome: JobOutcome) -> None:
        for method in self._after:
            await _acall(method, job, outcome)


def _call(method: Any, *args: Any) -> None:
    try:
        value = method(*args)
        if hasattr(value, "__await__"):
            value.close()
            raise TypeError("an async hook method cannot run around a sync task or an enqueue")
    except Exception:
        log.exception("hook %s failed; ignored", _name(method))


async def _acall(method: Any, *args: Any) -> None:
    try:
        value = method(*args)
        if hasattr(value, "__await__"):
            await value
    except Exception:
        log.exception("hook %s failed; ignored", _name(method))


def _name(method: Any) -> str:
    return getattr(method, "__qualname__", repr(method))


def now() -> float:
    return time.perf_counter()
