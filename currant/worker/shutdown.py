"""Stopping: hand back what never started, let running jobs finish, report, leave.

On SIGTERM/SIGINT the claimer stops claiming. Prefetched jobs that no lane
started go back untouched (attempt refunded). Running jobs get the grace
period; the completer keeps reporting while they finish, so a SIGKILL at the
end of the grace period re-runs only what was still running. Jobs still
running then are recorded as interrupted (and retried). Last, the worker
deregisters, which also hands back anything still leased to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..task import Task
from .claimer import Claimer
from .completer import Completer
from .config import WorkerConfig
from .lanes import Lanes
from .outcomes import DEFAULT_MAX_ATTEMPTS, Finished, interrupted
from .state import WorkerState

log = logging.getLogger("currant.worker")


async def shut_down(
    *,
    state: WorkerState,
    config: WorkerConfig,
    tasks: dict[str, Task[Any, Any]],
    lanes: Lanes,
    claimer: Claimer,
    completer: Completer,
    completing: asyncio.Task[None],
    deregister: Callable[[], Awaitable[None]],
) -> None:
    unstarted = lanes.stop()
    if unstarted:
        await claimer.release(unstarted)
    finished = await lanes.join(config.shutdown_grace)
    completer.close()
    await completing
    if not finished:
        stuck: list[Finished] = []
        for job_id, job in list(state.held.items()):
            attempt = job[1]
            context = lanes.active.get(job_id)
            task = tasks.get(context.task) if context is not None else None
            limit = task.max_attempts if task is not None else DEFAULT_MAX_ATTEMPTS
            stuck.append((job_id, attempt, interrupted(context.task if context is not None else None, limit)))
        log.warning("%d jobs still running after the grace period; reporting them interrupted", len(stuck))
        if stuck:
            await completer.complete(stuck)
        await lanes.cancel_async()
    await deregister()
