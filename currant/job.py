"""What callers see of a job: the Job record, bulk-enqueue Items, the running job's context."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

STATES = ("queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled")
FINISHED_STATES = frozenset({"succeeded", "failed", "cancelled"})


class Item(NamedTuple):
    """One job of an ``enqueue_many`` call when it needs more than args.

    Plain items are an args tuple, or an ``(args, kwargs)`` pair (a 2-tuple of
    a tuple/list and a dict); use Item for per-job options.
    """

    args: tuple[Any, ...] | list[Any] = ()
    kwargs: dict[str, Any] | None = None
    unique_key: str | None = None
    priority: int | None = None
    delay: float | None = None
    run_at: datetime | None = None


@dataclass(frozen=True)
class Job:
    """A job row as ``App.get_job`` reads it."""

    id: int
    task: str
    queue: str
    state: str
    attempts: int
    max_attempts: int | None  # None: the task's setting in the worker applies
    priority: int
    result: Any
    error: str | None
    errors: list[dict[str, Any]] = field(default_factory=list)
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    run_at: datetime | None = None
    cancel_requested: bool = False
    unique_key: str | None = None
    rescues: int = 0
    args: tuple[Any, ...] | None = None  # None if the stored payload does not decode (payload_error says why)
    kwargs: dict[str, Any] | None = None
    payload_error: str | None = None
    worker_id: int | None = None  # the worker that runs (or last ran) it

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


class JobContext:
    """The running job, as a task sees it through :func:`current_job`.

    A sync task that may run long should check ``cancel_requested`` and raise
    :class:`currant.JobCancelled` when it turns true.
    """

    __slots__ = ("id", "attempt", "task", "cancel_requested", "timed_out")

    def __init__(self, id: int, attempt: int, task: str) -> None:
        self.id = id
        self.attempt = attempt
        self.task = task
        self.cancel_requested = False
        self.timed_out = False


_current = threading.local()


def current_job() -> JobContext | None:
    """The job the calling thread is running (sync tasks), or None."""
    return getattr(_current, "job", None)


def _set_current(context: JobContext | None) -> None:
    _current.job = context
