"""What callers see of a job: the Job record, bulk-enqueue Items, the running job's context."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

STATES = ("waiting", "queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled")
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
    progress: dict[str, Any] | None = None  # the last JobContext.progress() report: done, total, note, at

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


class JobContext:
    """The running job, as its task sees it through :func:`current_job`.

    A sync task that may run long should check ``cancel_requested`` and raise
    :class:`currant.JobCancelled` when it turns true, and may report how far
    it got with :meth:`progress`.
    """

    __slots__ = (
        "id",
        "attempt",
        "task",
        "queue",
        "max_attempts",
        "waited",
        "headers",
        "cancel_requested",
        "timed_out",
        "_progress_sink",
    )

    def __init__(
        self,
        id: int,
        attempt: int,
        task: str,
        queue: str = "",
        max_attempts: int | None = None,
        waited: float = 0.0,
        headers: dict[str, str] | None = None,
        progress_sink: Callable[[JobContext, dict[str, Any]], None] | None = None,
    ) -> None:
        self.id = id
        self.attempt = attempt
        self.task = task
        self.queue = queue
        self.max_attempts = max_attempts  # the job's own limit; None: the task's applies
        self.waited = waited  # seconds from run_at to the claim
        self.headers = headers  # what the producer attached (a trace context, say)
        self.cancel_requested = False
        self.timed_out = False
        self._progress_sink = progress_sink

    def progress(self, done: float, total: float | None = None, note: str | None = None) -> None:
        """Report how far the job got (``python -m currant show`` and the dashboard show it).

        Cheap to call often: the worker writes the latest report of each job
        at most once a second.
        """
        if not isinstance(done, (int, float)) or isinstance(done, bool):
            raise TypeError(f"done must be a number, not {type(done).__name__}")
        if total is not None and (not isinstance(total, (int, float)) or isinstance(total, bool)):
            raise TypeError(f"total must be a number or None, not {type(total).__name__}")
        if note is not None and not isinstance(note, str):
            raise TypeError(f"note must be a str or None, not {type(note).__name__}")
        if self._progress_sink is not None:
            self._progress_sink(self, {"done": done, "total": total, "note": note})


_current: ContextVar[JobContext | None] = ContextVar("currant_current_job", default=None)


def current_job() -> JobContext | None:
    """The job the caller is running (a sync task on its thread, an async one in its coroutine), or None."""
    return _current.get()


# The ContextVar's own method: a lane calls it twice per job, without a Python frame.
_set_current = _current.set
