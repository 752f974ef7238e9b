"""Hooks: code of yours (and Currant's own metrics and tracing) run around
every enqueue and every job.

A hook is any object with some of these methods; register it with
``app.add_hook(hook)``::

    class MyHook:
        def before_enqueue(self, event: EnqueueEvent) -> None: ...   # may add event.headers
        def after_enqueue(self, event: EnqueueEvent) -> None: ...    # event.ids, or event.error
        def before_job(self, job: JobContext) -> None: ...
        def after_job(self, job: JobContext, outcome: JobOutcome) -> None: ...
        def on_retry(self, job: JobContext, outcome: JobOutcome) -> None: ...    # the attempt failed; it runs again
        def on_failure(self, job: JobContext, outcome: JobOutcome) -> None: ...  # the job failed for good
        def after_batch(self, attempts: Sequence[tuple[JobContext, float]]) -> None: ...  # see below

Enqueue hooks run in the caller's thread or coroutine. Job hooks run in the
job's own context: on the lane thread for a sync task, inside the task's
coroutine for an async one, so a hook may set context variables (a tracing
span) that the handler sees. Any method may be ``async def``; it is awaited
where the caller is async (``aenqueue``, async tasks) and refused with a
logged error where it is not.

A hook that raises is logged and ignored: it never fails, loses or delays a
job or an enqueue. With no hook registered Currant pays one branch per job
and per enqueue.

``after_batch`` is the cheap way to watch every job: a worker calls it on
its event loop after each batch of outcomes it records, with each attempt's
context and handler time (seconds) since the last call. Its per-job cost is
an append on the lane; the hook's own work is per batch, and it must be
quick, since completions wait for it (the worker's metrics fill their
histograms here).

A hook may also have an ``idle()`` method: while it returns True, a worker
skips the hook's job methods altogether (the tracing hook is idle while no
OpenTelemetry SDK is configured). The worker asks at start and with every
heartbeat, so a hook that wakes up is called within one heartbeat interval.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .job import JobContext

log = logging.getLogger("currant.hooks")

_METHODS = ("before_enqueue", "after_enqueue", "before_job", "after_job", "on_retry", "on_failure", "after_batch")
# The methods a lane calls around each job.
_PER_JOB = ("before_job", "after_job", "on_retry", "on_failure")


@dataclass
class EnqueueEvent:
    """One enqueue call (``count`` jobs of one task). Hooks may add ``headers``:
    they travel with every job and are the job's ``JobContext.headers``."""

    task: str
    queue: str
    count: int
    transactional: bool  # inside the caller's transaction: visible only at its commit
    headers: dict[str, str] = field(default_factory=dict)
    ids: Sequence[int] = ()  # after_enqueue: the job ids
    error: BaseException | None = None  # after_enqueue: why it failed (nothing was enqueued)
    state: dict[str, Any] = field(default_factory=dict)  # a hook's own scratch space between before and after


@dataclass
class JobOutcome:
    """How an attempt ended.

    ``status`` is ``"succeeded"``, ``"retrying"`` (it raised and attempts
    remain: it runs again in ``retry_in`` seconds), ``"failed"`` (for good) or
    ``"cancelled"``, as the database records it. ``duration`` is the
    handler's time in seconds, ``error`` the recorded error text,
    ``exception`` the exception itself, ``result`` the return value.
    """

    status: str
    duration: float
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    result: Any = field(default=None, repr=False)
    retry_in: float | None = None


class Hooks:
    """The hooks of one App, called in registration order."""

    def __init__(self) -> None:
        self._hooks: list[Any] = []
        self._by_method: dict[str, list[Any]] = {name: [] for name in _METHODS}
        self.watches_jobs = False
        self.watches_enqueue = False
        self.watches_batches = False

    def add(self, hook: Any) -> Any:
        """Register a hook object; returns it."""
        found = [name for name in _METHODS if callable(getattr(hook, name, None))]
        if not found:
            raise TypeError(f"{hook!r} has none of the hook methods: {', '.join(_METHODS)}")
        self._hooks.append(hook)
        for name in found:
            self._by_method[name].append(getattr(hook, name))
        self.watches_jobs = any(self._by_method[name] for name in _PER_JOB)
        self.watches_batches = bool(self._by_method["after_batch"])
        self.watches_enqueue = bool(self._by_method["before_enqueue"] or self._by_method["after_enqueue"])
        return hook

    def for_jobs(self) -> Hooks | None:
        """What a worker runs around its jobs: these hooks less the idle ones,
        or None when no per-job hook is left (then a job pays one branch)."""
        awake = [hook for hook in self._hooks if not _idle(hook)]
        if len(awake) == len(self._hooks):
            return self if self.watches_jobs else None
        view = Hooks()
        for hook in awake:
            view.add(hook)
        return view if view.watches_jobs else None

    async def aafter_batch(self, attempts: Sequence[tuple[JobContext, float]]) -> None:
        for method in self._by_method["after_batch"]:
            await _acall(method, attempts)

    # -- sync callers ------------------------------------------------------------

    def before_enqueue(self, event: EnqueueEvent) -> None:
        for method in self._by_method["before_enqueue"]:
            _call(method, event)

    def after_enqueue(self, event: EnqueueEvent) -> None:
        for method in self._by_method["after_enqueue"]:
            _call(method, event)

    def before_job(self, job: JobContext) -> None:
        for method in self._by_method["before_job"]:
            _call(method, job)

    def after_job(self, job: JobContext, outcome: JobOutcome) -> None:
        for method in self._after(outcome):
            _call(method, job, outcome)

    # -- async callers -------------------------------------------------------------

    async def abefore_enqueue(self, event: EnqueueEvent) -> None:
        for method in self._by_method["before_enqueue"]:
            await _acall(method, event)

    async def aafter_enqueue(self, event: EnqueueEvent) -> None:
        for method in self._by_method["after_enqueue"]:
            await _acall(method, event)

    async def abefore_job(self, job: JobContext) -> None:
        for method in self._by_method["before_job"]:
            await _acall(method, job)

    async def aafter_job(self, job: JobContext, outcome: JobOutcome) -> None:
        for method in self._after(outcome):
            await _acall(method, job, outcome)

    def _after(self, outcome: JobOutcome) -> list[Any]:
        methods = self._by_method["after_job"]
        if outcome.status == "retrying" and self._by_method["on_retry"]:
            return methods + self._by_method["on_retry"]
        if outcome.status == "failed" and self._by_method["on_failure"]:
            return methods + self._by_method["on_failure"]
        return methods


def _idle(hook: Any) -> bool:
    idle = getattr(hook, "idle", None)
    if not callable(idle):
        return False
    try:
        return bool(idle())
    except Exception:
        log.exception("hook %s failed; taken as not idle", _name(idle))
        return False


def _call(method: Any, *args: Any) -> None:
    try:
        value = method(*args)
        if value is not None and hasattr(value, "__await__"):  # None first: a failed hasattr is slow
            value.close()
            raise TypeError("an async hook method cannot run around a sync task or a sync enqueue")
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
