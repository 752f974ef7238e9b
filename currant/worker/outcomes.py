"""What an attempt's outcome is, and how a handler's return or exception becomes one.

An outcome is recorded by ``complete_outcomes`` (or, for the common case of a
handler that returned None, by ``complete_succeeded``, and then there is no
Outcome object at all: ``None`` stands for it). Building an outcome must never
fail in a way that loses the job: whatever goes wrong while building one (a
user's backoff function raising, an odd exception) makes the attempt fail for
good with a reason, rather than the lane dying.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import Any, NamedTuple

from ..codec import encode_result
from ..errors import Discard, JobCancelled, Retry
from ..job import JobContext
from ..task import Task

log = logging.getLogger("currant.worker")

# Outcome kinds, as complete_outcomes reads them.
SUCCEEDED = "s"
RETRY = "r"
FAILED = "f"
CANCELLED = "c"

# A job whose task this worker does not know is retried after this long: the
# usual cause is a rolling deploy, and a worker that knows it will come along.
UNKNOWN_TASK_RETRY_DELAY = 60.0

# The attempt limit of a job enqueued without max_attempts whose task this
# worker does not know.
DEFAULT_MAX_ATTEMPTS = 25

# Retry delays are clamped to this (and NaN or negative to 0): a delay the
# database cannot add to now() would make the whole completion batch fail.
MAX_RETRY_DELAY = 365 * 24 * 3600.0


class Outcome(NamedTuple):
    kind: str
    result: bytes | None = None
    error: str | None = None
    traceback: str | None = None
    delay: float | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # the task's; the job's own setting wins in SQL
    task: str | None = None  # for the log line of a failed attempt


# One finished attempt as the lanes report it: (job id, attempt, outcome or None).
Finished = tuple[int, int, "Outcome | None"]


def storable(text: str) -> str:
    """Text PostgreSQL can store: an error message must never block its own completion.

    NUL cannot be stored at all, and lone surrogates (file names decoded with
    surrogateescape) cannot be encoded as UTF-8: both are escaped.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def describe(exc: BaseException) -> str:
    text = storable(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def retry_delay(value: Any) -> float:
    seconds = float(value)
    if not seconds > 0:  # NaN and negatives
        return 0.0
    return min(seconds, MAX_RETRY_DELAY)


def guarded(build: Callable[[], Outcome | None]) -> Outcome | None:
    """Build an outcome; if that runs into an error, the attempt fails for good."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001
        return Outcome(FAILED, error=storable(f"OutcomeError: could not record the attempt's outcome: {exc!r}"))


def success(value: Any, task: str) -> Outcome | None:
    if value is None:
        return None
    try:
        return Outcome(SUCCEEDED, result=encode_result(value))
    except TypeError as exc:
        return Outcome(FAILED, error=f"ResultError: {exc}", task=task)


def failure(task: Task[Any, Any], context: JobContext, exc: BaseException) -> Outcome:
    if isinstance(exc, Retry):
        delay = exc.delay if exc.delay is not None else task.backoff(context.attempt)
        return Outcome(
            RETRY,
            error=storable(f"Retry: {exc.reason}"),
            delay=retry_delay(delay),
            max_attempts=task.max_attempts,
            task=task.name,
        )
    if isinstance(exc, Discard):
        return Outcome(FAILED, error=storable(f"Discard: {exc.reason}"), task=task.name)
    # An async task cancelled on the loop reaches its lane as concurrent.futures.CancelledError.
    if isinstance(exc, (JobCancelled, asyncio.CancelledError, futures.CancelledError)) and context.cancel_requested:
        return Outcome(CANCELLED, error="JobCancelled: cancelled while running", task=task.name)
    tb = storable("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return Outcome(
        RETRY,
        error=describe(exc),
        traceback=tb,
        delay=retry_delay(task.backoff(context.attempt)),
        max_attempts=task.max_attempts,
        task=task.name,
    )


def timed_out(task: Task[Any, Any], context: JobContext) -> Outcome:
    return Outcome(
        RETRY,
        error=f"JobTimeout: timed out after {task.timeout:g} s",
        delay=retry_delay(task.backoff(context.attempt)),
        max_attempts=task.max_attempts,
        task=task.name,
    )


def unrunnable(name: str, task: Task[Any, Any] | None, payload_error: str | None) -> Outcome | None:
    """The outcome of a claimed job that cannot run at all, or None if it can."""
    if payload_error is not None:
        return Outcome(FAILED, error=f"PayloadError: {payload_error}", task=name)
    if task is None:
        return Outcome(
            RETRY,
            error=f"UnknownTask: task {name!r} is not registered in this worker",
            delay=UNKNOWN_TASK_RETRY_DELAY,
            task=name,
        )
    return None


def warn_unknown_task(job_id: int, name: str, known: Iterable[str], warned: set[str]) -> None:
    """Log once per task name (``warned`` remembers) that a job's task is not registered here."""
    if name in warned:
        return
    warned.add(name)
    log.warning(
        "job %s is for task %r, which this worker does not know (it knows: %s); such jobs are"
        " retried in %.0f s, for a worker that knows the task; is it running the same code as the"
        " producer, and the same task names?",
        job_id,
        name,
        ", ".join(sorted(known)) or "no tasks",
        UNKNOWN_TASK_RETRY_DELAY,
    )


def lane_error(name: str, exc: BaseException) -> Outcome:
    """A job whose run failed outside its handler (finding its task, starting it): retried later,
    like a job for an unknown task, with the error and its traceback kept."""
    tb = storable("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return Outcome(RETRY, error=describe(exc), traceback=tb, delay=UNKNOWN_TASK_RETRY_DELAY, task=name)


def interrupted(task: str | None, max_attempts: int) -> Outcome:
    """A job still running when the shutdown grace period ended: retried at once."""
    return Outcome(
        RETRY, error="WorkerShutdown: interrupted by shutdown", delay=0.0, max_attempts=max_attempts, task=task
    )


def as_failure(outcome: Outcome | None, exc: BaseException) -> Outcome | None:
    """An outcome the database refused to store, resent as a plain failure (which always stores)."""
    if outcome is None:
        return None
    return Outcome(
        FAILED,
        error=f"OutcomeError: the database refused this attempt's outcome: {type(exc).__name__}",
        task=outcome.task,
    )
