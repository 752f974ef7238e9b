"""Execution lanes: the threads that run jobs.

Each lane is a thread that takes claimed jobs from the local prefetch queue
and runs them one after another. Sync handlers run right on the lane; async
handlers are handed to the event loop and the lane waits for them, so
``concurrency`` lanes bound every kind of job alike. The event loop never runs
a sync handler and never waits for one.

A lane reports each finished attempt by appending ``(id, attempt, outcome)``
to a deque (see :mod:`currant.worker.outcomes`; ``outcome`` is None for the
common case, a handler that returned None). It wakes the loop only when no
wake-up is already pending, so a busy worker crosses threads once per batch,
not once per job.

Hooks (:mod:`currant.hooks`) run around each attempt in the job's own
context: on the lane for a sync task, in the coroutine for an async one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import faults
from ..hooks import Hooks
from ..job import JobContext, _set_current
from ..task import Task
from . import attempt as attempt_of
from . import outcomes
from .outcomes import CANCELLED, Finished, Outcome

log = logging.getLogger("currant.worker")

# A claimed job as currant.payload.decode_claimed returns it: (id, attempt,
# task, args, kwargs, payload_error, headers, queue, max_attempts, waited).
Claimed = tuple[int, int, str, Any, Any, Any, Any, str, Any, float]


class Lanes:
    """The lane threads of one worker process."""

    def __init__(
        self,
        tasks: dict[str, Task[Any, Any]],
        loop: asyncio.AbstractEventLoop,
        concurrency: int,
        wake: Callable[[], None],
        hooks: Hooks | None = None,
        progress_sink: Callable[[JobContext, dict[str, Any]], None] | None = None,
    ) -> None:
        self.tasks = tasks
        self.hooks = hooks or Hooks()
        self.progress_sink = progress_sink
        self.loop = loop
        self.concurrency = concurrency
        self.local: queue.SimpleQueue[Claimed | None] = queue.SimpleQueue()
        self.outcomes: deque[Finished] = deque()
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
        self._unknown: set[str] = set()  # task names already warned about

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
        job_id, attempt, name, args, kwargs, payload_error, headers, queue, max_attempts, waited = job
        task = self.tasks.get(name)
        if task is None or payload_error is not None:
            if task is None and name not in self._unknown:
                self._unknown.add(name)
                log.warning(
                    "job %s is for task %r, which this worker does not know (it knows: %s); such jobs are"
                    " retried in %.0f s, for a worker that knows the task; is it running the same code as the"
                    " producer, and the same task names?",
                    job_id,
                    name,
                    ", ".join(sorted(self.tasks)) or "no tasks",
                    outcomes.UNKNOWN_TASK_RETRY_DELAY,
                )
            return outcomes.unrunnable(name, task, payload_error)
        if job_id in self.cancelled:
            self.cancelled.discard(job_id)
            return Outcome(CANCELLED, error="JobCancelled: cancelled before it started")
        context = JobContext(job_id, attempt, name, queue, max_attempts, waited, headers, self.progress_sink)
        _set_current(context)
        self.active[job_id] = context
        if task.timeout is not None and not task.is_async:
            with self._deadline_lock:
                self.deadlines[job_id] = (time.monotonic() + task.timeout, context, task, threading.current_thread())
        hooks = self.hooks if self.hooks.watches_jobs else None
        outcome: Outcome | None
        try:
            faults.point("before_handler")
            if task.is_async:
                run = self._run_async(task, args, kwargs, context, hooks)
                outcome = asyncio.run_coroutine_threadsafe(run, self.loop).result()
            else:
                outcome = attempt_of.run_sync(task, args, kwargs, context, hooks)
        except BaseException as exc:  # noqa: BLE001 - nothing an attempt does ends its lane
            outcome = outcomes.guarded(functools.partial(outcomes.failure, task, context, exc))
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

    async def _run_async(
        self, task: Task[Any, Any], args: Any, kwargs: Any, context: JobContext, hooks: Hooks | None
    ) -> Outcome | None:
        current = asyncio.current_task()
        assert current is not None
        self.async_runs[context.id] = current  # so that a cancel can reach it
        try:
            return await attempt_of.run_async(task, args, kwargs, context, hooks)
        finally:
            if self.async_runs.get(context.id) is current:
                del self.async_runs[context.id]

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

    def expire_deadlines(self) -> list[Finished]:
        """Sync jobs past their timeout: report them failed and replace their lane.

        A Python thread cannot be killed; the lane is abandoned to finish in the
        background (its late result is dropped) and a fresh lane takes its slot.
        """
        now = time.monotonic()
        expired: list[Finished] = []
        with self._deadline_lock:
            for job_id, (deadline, context, task, thread) in list(self.deadlines.items()):
                if deadline <= now:
                    del self.deadlines[job_id]
                    self._abandoned_threads.add(thread)
                    context.timed_out = True
                    context.cancel_requested = True
                    outcome = outcomes.guarded(functools.partial(outcomes.timed_out, task, context))
                    expired.append((job_id, context.attempt, outcome))
        for job_id, _attempt, _outcome in expired:
            self.abandoned += 1
            log.warning(
                "job %s ran past its timeout; its thread is abandoned (%d so far) and a new lane replaces it",
                job_id,
                self.abandoned,
            )
            self._spawn()
        return expired

    async def watch_deadlines(self) -> None:
        """The watchdog of sync tasks with a timeout (runs on the loop)."""
        while True:
            await asyncio.sleep(0.05)
            expired = self.expire_deadlines()
            if expired:
                self.outcomes.extend(expired)
                self._wake()


_ABANDONED = object()
