"""One attempt of one job: the handler, the hooks around it, and its outcome.

Both kinds of task end the same way: the handler's return value or exception
becomes an :class:`~currant.worker.outcomes.Outcome` in the job's own context
(the lane thread for a sync task, the task's coroutine for an async one), and
the hooks around it see that outcome, with the fate the database will give it
(the same rule as ``complete_outcomes``: a failed attempt is retried while
attempts remain, unless cancellation was asked). When a hook watches
batches (``after_batch``: the worker's metrics), the handler's time is noted
in the lanes' timings as well.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from typing import Any

from .. import faults
from ..errors import JobTimeout
from ..hooks import Hooks, JobOutcome
from ..job import JobContext, _set_current
from ..task import Task
from . import outcomes
from .outcomes import CANCELLED, FAILED, RETRY, Outcome

# Each attempt's context and handler time, for the hooks that watch batches:
# the lanes append, the completer hands them over once per completion batch
# (Hooks.aafter_batch), so that a job pays an append, not a hook call.
Timings = deque[tuple[JobContext, float]]


def run_sync(
    task: Task[Any, Any],
    args: Any,
    kwargs: Any,
    context: JobContext,
    hooks: Hooks | None,
    timings: Timings | None = None,
) -> Outcome | None:
    timed = hooks is not None or timings is not None
    started = time.perf_counter() if timed else 0.0
    if hooks is not None:
        hooks.before_job(context)
    value: Any = None
    error: BaseException | None = None
    try:
        value = task.fn(*args, **kwargs)
        if faults.ARMED:
            faults.point("after_handler")
    except BaseException as exc:  # noqa: BLE001 - a handler's exception never reaches the lane
        error = exc
    # The common case (a handler that returned None) without a call.
    outcome = None if error is None and value is None else _outcome(task, context, value, error)
    if timed:
        duration = _took(started, context, timings)
        if hooks is not None:
            hooks.after_job(context, job_outcome(task, context, outcome, duration, value, error))
    return outcome


async def run_async(
    task: Task[Any, Any],
    args: Any,
    kwargs: Any,
    context: JobContext,
    hooks: Hooks | None,
    timings: Timings | None = None,
) -> Outcome | None:
    _set_current(context)  # this coroutine's own context: the handler sees its job
    timed = hooks is not None or timings is not None
    started = time.perf_counter() if timed else 0.0
    value: Any = None
    error: BaseException | None = None
    try:
        if hooks is not None:
            await hooks.abefore_job(context)
        if context.cancel_requested:  # asked before the task existed to be cancelled
            raise asyncio.CancelledError
        if task.timeout is None:
            value = await task.fn(*args, **kwargs)
        else:
            try:
                value = await asyncio.wait_for(task.fn(*args, **kwargs), task.timeout)
            except asyncio.TimeoutError:
                context.timed_out = True
                raise JobTimeout(f"timed out after {task.timeout:g} s") from None
        faults.point("after_handler")
    except BaseException as exc:  # noqa: BLE001 - cancellation included: it is this attempt's outcome
        error = exc
    outcome = _outcome(task, context, value, error)
    if timed:
        duration = _took(started, context, timings)
        if hooks is not None:
            await hooks.aafter_job(context, job_outcome(task, context, outcome, duration, value, error))
    return outcome


def _took(started: float, context: JobContext, timings: Timings | None) -> float:
    """The handler's time since ``started``, noted in ``timings`` for the batch hooks."""
    duration = time.perf_counter() - started
    if timings is not None:
        timings.append((context, duration))
    return duration


def _outcome(task: Task[Any, Any], context: JobContext, value: Any, error: BaseException | None) -> Outcome | None:
    if error is not None:
        return outcomes.guarded(functools.partial(outcomes.failure, task, context, error))
    if value is None:
        return None
    return outcomes.guarded(functools.partial(outcomes.success, value, task.name))


def job_outcome(
    task: Task[Any, Any],
    context: JobContext,
    outcome: Outcome | None,
    duration: float,
    value: Any,
    error: BaseException | None,
) -> JobOutcome:
    """What the hooks see: the attempt's fate, as complete_outcomes will decide it."""
    if outcome is None or outcome.kind == outcomes.SUCCEEDED:
        return JobOutcome("succeeded", duration, result=value)
    status = "failed"
    if outcome.kind == CANCELLED or (outcome.kind == RETRY and context.cancel_requested):
        status = "cancelled"
    elif outcome.kind == RETRY:
        limit = context.max_attempts if context.max_attempts is not None else outcome.max_attempts
        status = "retrying" if context.attempt < limit else "failed"
    elif outcome.kind != FAILED:  # pragma: no cover - every kind is handled above
        raise AssertionError(outcome.kind)
    retry_in = outcome.delay if status == "retrying" else None
    return JobOutcome(status, duration, error=outcome.error, exception=error, retry_in=retry_in)
