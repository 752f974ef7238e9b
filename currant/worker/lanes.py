"""Execution lanes: the threads that run jobs, and what an attempt's outcome is.

Each lane is a thread that takes claimed jobs from the local prefetch queue
and runs them one after another. Sync handlers run right on the lane; async
handlers are handed to the event loop and the lane waits for them, so
``concurrency`` lanes bound every kind of job alike. The event loop never runs
a sync handler and never waits for one.

A lane reports each finished attempt by appending ``(id, attempt, outcome)``
to a deque; ``outcome`` is None for the common case (returned None), else an
:class:`Outcome`. It wakes the loop only when no wake-up is already pending,
so a busy worker crosses threads once per batch, not once per job.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent import futures
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import faults
from ..codec import encode_result
from ..errors import Discard, JobCancelled, JobTimeout, Retry
from ..job import JobContext, _set_current
from ..task import Task

log = logging.getLogger("currant.worker")

# A claimed job as decode_claimed returns it: (id, attempt, task, args, kwargs, payload_error).
Claimed = tuple[int, int, str, Any, Any, Any]

# Outcome kinds, as complete_outcomes reads them.
SUCCEEDED = "s"
RETRY = "r"
FAILED = "f"
CANCELLED = "c"

# A job whose task this worker does not know is retried after this long: the
# usual cause is a rolling deploy, and a worker that knows it will come along.
UNKNOWN_TASK_RETRY_DELAY = 60.0


# A job enqueued without max_attempts, whose task this worker does not know.
DEFAULT_MAX_ATTEMPTS = 25


class Outcome(NamedTuple):
    kind: str
    result: bytes | None = None
    error: str | None = None
    traceback: str | None = None
    delay: float | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # the task's; the job's own setting wins in SQL


def _describe(exc: BaseException) -> str:
    text = _storable(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _storable(text: str) -> str:
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


# Retry delays are clamped to this (and NaN or negative to 0): a delay the
# database cannot add to now() would make the whole completion batch fail.
MAX_RETRY_DELAY = 365 * 24 * 3600.0


def _delay(value: Any) -> float:
    seconds = float(value)
    if not seconds > 0:  # NaN and negatives
        return 0.0
    return min(seconds, MAX_RETRY_DELAY)


def _guarded(build: Callable[[], Outcome | None]) -> Outcome | None:
    """Build an outcome; if that runs into an error (user backoff code, an odd
    exception), the attempt fails for good instead of the lane dying."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001
        return Outcome(FAILED, error=_storable(f"OutcomeError: could not record the attempt's outcome: {exc!r}"))


class Lanes:
    """The lane threads of one worker process."""

    def __init__(
        self,
        tasks: dict[str, Task[Any, Any]],
        loop: asyncio.AbstractEventLoop,
        concurrency: int,
        wake: Callable[[], None],
    ) -> None:
        self.tasks = tasks
        self.loop = loop
        self.concurrency = concurrency
        self.local: queue.SimpleQueue[Claimed | None] = queue.SimpleQueue()
        self.outcomes: deque[tuple[int, int, Outcome | None]] = deque()
        self.active: dict[int, JobContext] = {}
        self.async_runs: dict[int, asyncio.Task[Any]] = {}
        self.cancelled: set[int] = set()
        self.deadlines: dict[int, tuple[float, JobContext, Task[Any, Any], threading.Thread]] = {}
        self._abandoned_threads: set[threading.Thread] = set()
        self.abandoned = 0
        self._deadline_lock = threading.Lock()
        self._wake = wake
        self._wake_pending = False
        self._threads: list[threading.Thread] = []

    # -- life cycle ------------------------------------------------------------

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._run_lane, name=f"currant-lane-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def take_unstarted(self) -> list[Claimed]:
        """Take back every job no lane has started yet."""
        unstarted: list[Claimed] = []
        while True:
            try:
                job = self.local.get_nowait()
            except queue.Empty:
                return unstarted
            if job is not None:
                unstarted.append(job)

    def stop(self) -> list[Claimed]:
        """Take back the unstarted jobs and tell the lanes to finish."""
        unstarted = self.take_unstarted()
        for _ in self._threads:
            self.local.put(None)
        return unstarted

    def join(self, timeout: float) -> bool:
        """Wait for the lanes to finish their current jobs; False if some are still busy."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads if thread not in self._abandoned_threads)

    def request_wake(self) -> None:
        """Called by the loop before it drains outcomes: the next report wakes it again."""
        self._wake_pending = False

    # -- running jobs ------------------------------------------------------------

    def _run_lane(self) -> None:
        get = self.local.get
        outcomes = self.outcomes
        run = self._run_one
        while True:
            job = get()
            if job is None:
                return
            result = run(job)
            if result is _ABANDONED:
                return  # a replacement lane has taken this one's slot
            outcomes.append((job[0], job[1], result))  # type: ignore[arg-type]  # _ABANDONED excluded above
            if not self._wake_pending:
                self._wake_pending = True
                self.loop.call_soon_threadsafe(self._wake)

    def _run_one(self, job: Claimed) -> Outcome | None | object:
        job_id, attempt, name, args, kwargs, payload_error = job
        if payload_error is not None:
            return Outcome(FAILED, error=f"PayloadError: {payload_error}")
        task = self.tasks.get(name)
        if task is None:
            return Outcome(
                RETRY,
                error=f"UnknownTask: task {name!r} is not registered in this worker",
                delay=UNKNOWN_TASK_RETRY_DELAY,
            )
        if job_id in self.cancelled:
            self.cancelled.discard(job_id)
            return Outcome(CANCELLED, error="JobCancelled: cancelled before it started")
        context = JobContext(job_id, attempt, name)
        _set_current(context)
        self.active[job_id] = context
        if task.timeout is not None and not task.is_async:
            with self._deadline_lock:
                self.deadlines[job_id] = (time.monotonic() + task.timeout, context, task, threading.current_thread())
        outcome: Outcome | None
        try:
            faults.point("before_handler")
            if task.is_async:
                value = asyncio.run_coroutine_threadsafe(self._run_async(task, args, kwargs, context), self.loop).result()
            else:
                value = task.fn(*args, **kwargs)
            faults.point("after_handler")
        except BaseException as exc:  # noqa: BLE001 - a handler's exception never reaches the lane
            outcome = _guarded(functools.partial(self._failure, task, context, exc))
        else:
            outcome = None if value is None else _guarded(lambda: self._success(value))
        finally:
            # Only this attempt's entries: an abandoned (timed-out) attempt that
            # ends late must not remove those of the retry running meanwhile.
            if self.active.get(job_id) is context:
                del self.active[job_id]
            _set_current(None)
        self.cancelled.discard(job_id)
        if task.timeout is not None and not task.is_async:
            with self._deadline_lock:
                entry = self.deadlines.get(job_id)
                if entry is None or entry[1] is not context:
                    return _ABANDONED  # the watchdog already reported this attempt as timed out
                del self.deadlines[job_id]
        return outcome

    async def _run_async(self, task: Task[Any, Any], args: Any, kwargs: Any, context: JobContext) -> Any:
        current = asyncio.current_task()
        assert current is not None
        self.async_runs[context.id] = current
        try:
            if context.cancel_requested:  # asked before the task existed to be cancelled
                raise asyncio.CancelledError
            if task.timeout is None:
                return await task.fn(*args, **kwargs)
            try:
                return await asyncio.wait_for(task.fn(*args, **kwargs), task.timeout)
            except asyncio.TimeoutError:
                context.timed_out = True
                raise JobTimeout(f"timed out after {task.timeout:g} s") from None
        finally:
            if self.async_runs.get(context.id) is current:
                del self.async_runs[context.id]

    @staticmethod
    def _success(value: Any) -> Outcome:
        try:
            return Outcome(SUCCEEDED, result=encode_result(value))
        except TypeError as exc:
            return Outcome(FAILED, error=f"ResultError: {exc}")

    @staticmethod
    def _failure(task: Task[Any, Any], context: JobContext, exc: BaseException) -> Outcome:
        if isinstance(exc, Retry):
            delay = exc.delay if exc.delay is not None else task.backoff(context.attempt)
            return Outcome(
                RETRY, error=_storable(f"Retry: {exc.reason}"), delay=_delay(delay), max_attempts=task.max_attempts
            )
        if isinstance(exc, Discard):
            return Outcome(FAILED, error=_storable(f"Discard: {exc.reason}"))
        # An async task cancelled on the loop reaches its lane as concurrent.futures.CancelledError.
        if isinstance(exc, (JobCancelled, asyncio.CancelledError, futures.CancelledError)) and context.cancel_requested:
            return Outcome(CANCELLED, error="JobCancelled: cancelled while running")
        tb = _storable("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return Outcome(
            RETRY, error=_describe(exc), traceback=tb, delay=_delay(task.backoff(context.attempt)),
            max_attempts=task.max_attempts,
        )

    # -- called from the event loop ------------------------------------------

    def cancel(self, job_id: int) -> bool:
        """Ask a held job to stop; True if this worker holds it."""
        self.cancelled.add(job_id)
        context = self.active.get(job_id)
        if context is None:
            return False
        context.cancel_requested = True
        run = self.async_runs.get(job_id)
        if run is not None:
            run.cancel()
        return True

    def expire_deadlines(self) -> list[tuple[int, int, Outcome | None]]:
        """Sync jobs past their timeout: report them failed and replace their lane.

        A Python thread cannot be killed; the lane is abandoned to finish in the
        background (its late result is dropped) and a fresh lane takes its slot.
        """
        now = time.monotonic()
        expired: list[tuple[int, int, Outcome | None]] = []
        with self._deadline_lock:
            for job_id, (deadline, context, task, thread) in list(self.deadlines.items()):
                if deadline <= now:
                    del self.deadlines[job_id]
                    self._abandoned_threads.add(thread)
                    context.timed_out = True
                    context.cancel_requested = True
                    expired.append(
                        (job_id, context.attempt,
                         _guarded(lambda: Outcome(RETRY, error=f"JobTimeout: timed out after {task.timeout:g} s",
                                                  delay=_delay(task.backoff(context.attempt)),
                                                  max_attempts=task.max_attempts)))
                    )
        for job_id, _attempt, _outcome in expired:
            self.abandoned += 1
            log.warning(
                "job %s ran past its timeout; its thread is abandoned (%d so far) and a new lane replaces it",
                job_id, self.abandoned,
            )
            self._spawn()
        return expired


_ABANDONED = object()
