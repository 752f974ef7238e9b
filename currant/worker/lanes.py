"""Execution lanes: where jobs run, ``concurrency`` at a time.

Lanes are threads that take claimed jobs from the local prefetch queue. Sync
handlers run right on the lane, so an app with only sync tasks has one lane
per unit of concurrency and nothing else bounds it. Async handlers do not hold
a thread: the lane hands the job to the event loop, where it runs as a task,
and takes the next one. With async tasks in the app every running job, of
either kind, holds one of ``concurrency`` slots (taken by the lane before it
takes a job, given back when the job ends), and lanes are started as sync jobs
need them: 10,000 jobs awaiting I/O need 10,000 slots, not 10,000 threads.
The event loop never runs a sync handler and never waits for one.

Each finished attempt is reported by appending ``(id, attempt, outcome)`` to
a deque (see :mod:`currant.worker.outcomes`; ``outcome`` is None for the
common case, a handler that returned None). The loop is woken only when no
wake-up is already pending, so a busy worker crosses threads once per batch,
not once per job; jobs handed to the loop cross the same way.

Hooks (:mod:`currant.hooks`) run around each attempt in the job's own
context (the lane, or the async job's task), idle ones left out; for batch
hooks each attempt's handler time goes to ``timings``, which the completer hands over.
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
from typing import Any, NamedTuple

from .. import faults
from ..hooks import Hooks
from ..job import JobContext, _set_current
from ..task import Task
from . import attempt as attempt_of
from . import outcomes
from .attempt import Timings
from .outcomes import CANCELLED, Finished, Outcome

log = logging.getLogger("currant.worker")

# A claimed job as currant.payload.decode_claimed returns it: (id, attempt,
# task, args, kwargs, payload_error, headers, queue, max_attempts, waited).
Claimed = tuple[int, int, str, Any, Any, Any, Any, str, Any, float]

# Lanes started at once when the app has async tasks; more come as sync jobs need them.
FIRST_LANES = 2


class Attempt(NamedTuple):
    """A job about to run: its task found, its context made."""

    task: Task[Any, Any]
    args: Any
    kwargs: Any
    context: JobContext


class Lanes:
    """The lanes of one worker process, and its async jobs."""

    def __init__(
        self,
        tasks: dict[str, Task[Any, Any]],
        loop: asyncio.AbstractEventLoop,
        concurrency: int,
        wake: Callable[[], None],
        hooks: Hooks | None = None,
        progress_sink: Callable[[JobContext, dict[str, Any]], None] | None = None,
        room: Callable[[], None] | None = None,
    ) -> None:
        self.tasks = tasks
        self.hooks = hooks if hooks is not None else Hooks()
        self.job_hooks = self.hooks.for_jobs()  # what runs around each job: None for nothing
        self.timings: Timings | None = deque() if self.hooks.watches_batches else None
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
        # Called on the loop when async jobs left the local queue: the claimer
        # may refill it now, not only when a job ends (async jobs may wait long).
        self._room = room
        self._threads: list[threading.Thread] = []
        self._unknown: set[str] = set()  # task names already warned about
        # Only an app with async tasks needs slots: otherwise the lanes are the
        # bound. A registry that grows as jobs name tasks (the Django backend's,
        # a dict subclass) may bring async ones later: it gets slots too.
        may_be_async = type(tasks) is not dict or any(t.is_async for t in tasks.values())
        # A slot is a token in a SimpleQueue: taking and giving one back are C
        # calls, a fraction of threading.Semaphore's Python-level cost per job.
        self._slots: queue.SimpleQueue[None] | None = None
        if may_be_async:
            self._slots = queue.SimpleQueue()
            for _ in range(concurrency):
                self._slots.put(None)
        self._handed: deque[Attempt] = deque()  # async jobs on their way to the loop
        self._hand_pending = False
        self._async_jobs: set[asyncio.Task[None]] = set()
        self._lanes_lock = threading.Lock()
        self._stopping = False

    # -- life cycle ------------------------------------------------------------

    def start(self) -> None:
        first = self.concurrency if self._slots is None else min(self.concurrency, FIRST_LANES)
        with self._lanes_lock:
            for _ in range(first):
                self._spawn()

    def _spawn(self) -> None:  # with _lanes_lock held
        thread = threading.Thread(target=self._run_lane, name=f"currant-lane-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _grow(self) -> None:
        """A lane took a sync job and more are queued: start another lane, up to the bound."""
        if self.local.qsize() and len(self._threads) - len(self._abandoned_threads) < self.concurrency:
            self._add_lane()

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
        with self._lanes_lock:
            self._stopping = True
            for _ in self._threads:
                self.local.put(None)
        return unstarted

    async def join(self, timeout: float) -> bool:
        """Wait for the running jobs to finish; False if some are still running."""
        deadline = time.monotonic() + timeout
        threads = await asyncio.to_thread(self._join_threads, timeout)
        if self._async_jobs:
            await asyncio.wait(list(self._async_jobs), timeout=max(0.0, deadline - time.monotonic()))
        return threads and not self._async_jobs

    async def cancel_async(self) -> None:
        """After the grace period, and after they were reported interrupted: cancel the
        async jobs still running, so that their ``finally`` blocks run before the loop ends."""
        if self._async_jobs:
            for run in self._async_jobs:
                run.cancel()
            await asyncio.wait(list(self._async_jobs), timeout=1.0)

    def _join_threads(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads if thread not in self._abandoned_threads)

    def refresh_hooks(self) -> None:
        """Ask the hooks again which of them are idle (at every heartbeat)."""
        self.job_hooks = self.hooks.for_jobs()

    def request_wake(self) -> None:
        """Called by the loop before it drains outcomes: the next report wakes it again."""
        self._wake_pending = False

    # -- the lanes -----------------------------------------------------------------

    def _run_lane(self) -> None:
        get = self.local.get
        finished = self.outcomes
        slots = self._slots
        while True:
            if slots is not None:
                slots.get()  # before the job: a job waiting for a slot stays where shutdown can take it back
            job = get()
            if job is None:
                if slots is not None:
                    slots.put(None)  # a lane that stops holds no slot
                return
            try:
                result = self._run_one(job)
            except BaseException as exc:  # outside the attempt: the job is still reported
                log.exception("job %s could not be started (task %r); it is retried later", job[0], job[2])
                self._forget(job[0])
                result = outcomes.lane_error(job[2], exc)
            if result is _HANDED:
                continue  # its slot went with it to the loop
            if result is _ABANDONED:
                return  # a replacement lane has taken this one's slot
            if slots is not None:
                slots.put(None)
            finished.append((job[0], job[1], result))  # type: ignore[arg-type]  # markers excluded above
            if not self._wake_pending:
                self._wake_pending = True
                self.loop.call_soon_threadsafe(self._wake)

    def _run_one(self, job: Claimed) -> Outcome | None | object:
        job_id, attempt, name, args, kwargs, payload_error, headers, queue, max_attempts, waited = job
        task = self.tasks.get(name)
        if task is None or payload_error is not None:
            return self._unrunnable(job_id, name, task, payload_error)
        if job_id in self.cancelled:
            self.cancelled.discard(job_id)
            return Outcome(CANCELLED, error="JobCancelled: cancelled before it started")
        context = JobContext(job_id, attempt, name, queue, max_attempts, waited, headers, self.progress_sink)
        self.active[job_id] = context
        if task.is_async:
            ready = Attempt(task, args, kwargs, context)
            if self._slots is None:
                # A task registry that grows as jobs name tasks (the Django
                # backend's) may bring an async task to a worker that started
                # without slots: the lane waits for it, so the lanes stay the bound.
                return asyncio.run_coroutine_threadsafe(self._attempt_async(ready), self.loop).result()
            self._hand_to_loop(ready)
            return _HANDED
        if self._slots is not None:
            self._grow()
        return self._run_sync(task, args, kwargs, context)

    def _unrunnable(self, job_id: int, name: str, task: Task[Any, Any] | None, payload_error: Any) -> Outcome | None:
        if task is None:
            outcomes.warn_unknown_task(job_id, name, self.tasks, self._unknown)
        return outcomes.unrunnable(name, task, payload_error)

    def _run_sync(self, task: Task[Any, Any], args: Any, kwargs: Any, context: JobContext) -> Outcome | None | object:
        # The per-job path of every sync drain: kept to the calls it needs.
        job_id = context.id
        _set_current(context)
        if task.timeout is not None:
            with self._deadline_lock:
                self.deadlines[job_id] = (time.monotonic() + task.timeout, context, task, threading.current_thread())
        outcome: Outcome | None
        try:
            if faults.ARMED:
                faults.point("before_handler")
            outcome = attempt_of.run_sync(task, args, kwargs, context, self.job_hooks, self.timings)
        except BaseException as exc:  # noqa: BLE001 - nothing an attempt does ends its lane
            outcome = outcomes.guarded(functools.partial(outcomes.failure, task, context, exc))
        finally:
            # Only this attempt's entries: an abandoned (timed-out) attempt that
            # ends late must not remove those of the retry running meanwhile.
            if self.active.get(job_id) is context:
                del self.active[job_id]
            self.cancelled.discard(job_id)
            _set_current(None)
        if task.timeout is not None:
            with self._deadline_lock:
                entry = self.deadlines.get(job_id)
                if entry is None or entry[1] is not context:
                    return _ABANDONED  # the watchdog already reported this attempt as timed out
                del self.deadlines[job_id]
        return outcome

    def _ended(self, context: JobContext) -> None:
        # As in _run_sync: only this attempt's entries.
        if self.active.get(context.id) is context:
            del self.active[context.id]
        self.cancelled.discard(context.id)

    def _forget(self, job_id: int) -> None:
        self.active.pop(job_id, None)
        self.cancelled.discard(job_id)
        with self._deadline_lock:
            self.deadlines.pop(job_id, None)

    # -- async jobs, on the loop ---------------------------------------------------

    def _hand_to_loop(self, ready: Attempt) -> None:
        self._handed.append(ready)
        if not self._hand_pending:
            self._hand_pending = True
            self.loop.call_soon_threadsafe(self._start_handed)

    def _start_handed(self) -> None:
        self._hand_pending = False
        while self._handed:
            run = self.loop.create_task(self._run_async_job(self._handed.popleft()))
            self._async_jobs.add(run)
            run.add_done_callback(self._async_jobs.discard)
        if self._room is not None:
            self._room()

    async def _run_async_job(self, ready: Attempt) -> None:
        try:
            outcome = await self._attempt_async(ready)
        finally:
            assert self._slots is not None  # only handed to the loop when there are slots
            self._slots.put(None)
        self.outcomes.append((ready.context.id, ready.context.attempt, outcome))
        if not self._wake_pending:
            self._wake_pending = True
            self.loop.call_soon(self._wake)

    async def _attempt_async(self, ready: Attempt) -> Outcome | None:
        context = ready.context
        outcome: Outcome | None
        try:
            faults.point("before_handler")
            outcome = await self._run_async(ready.task, ready.args, ready.kwargs, context)
        except BaseException as exc:  # noqa: BLE001 - its outcome, whatever ended it
            outcome = outcomes.guarded(functools.partial(outcomes.failure, ready.task, context, exc))
        finally:
            self._ended(context)
        return outcome

    async def _run_async(self, task: Task[Any, Any], args: Any, kwargs: Any, context: JobContext) -> Outcome | None:
        current = asyncio.current_task()
        assert current is not None
        self.async_runs[context.id] = current  # so that a cancel can reach it
        try:
            return await attempt_of.run_async(task, args, kwargs, context, self.job_hooks, self.timings)
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
            if self._slots is not None:
                self._slots.put(None)  # the abandoned lane never gives its slot back (nor reads a stop)
            log.warning(
                "job %s ran past its timeout; its thread is abandoned (%d so far) and a new lane replaces it",
                job_id,
                self.abandoned,
            )
            self._add_lane()
        return expired

    def _add_lane(self) -> None:
        """One more lane, up to ``concurrency`` of them (abandoned ones do not count)."""
        with self._lanes_lock:
            lanes = len(self._threads) - len(self._abandoned_threads)
            if not self._stopping and lanes < self.concurrency:
                self._spawn()

    async def watch_deadlines(self) -> None:
        """The watchdog of sync tasks with a timeout (runs on the loop)."""
        while True:
            await asyncio.sleep(0.05)
            expired = self.expire_deadlines()
            if expired:
                self.outcomes.extend(expired)
                self._wake()


_ABANDONED = object()
_HANDED = object()
