"""Run every ready job in the calling process, through the worker's own statements.

:func:`drain` and :func:`adrain` register a worker row, then repeat: one
heartbeat (``maintain``: promotes due jobs, says when the next is due), the
worker's claim per queue (then ``claim_suspect`` and ``claim_limited``, so
rescued and rate- or concurrency-limited jobs run too), each job run by the
worker's own attempt code (:mod:`currant.worker.attempt`) and recorded by
the worker's completion statements. Jobs that wait for parents are queued
by the database as their parents finish, in the same completion, so the
next round claims them. When a round runs nothing, ``advance_clock`` may
move this session's database clock to the next due job (a retry, a delay, a
rate limit's next token); otherwise the drain ends and deregisters.

The loop is written once, as a generator of steps (:mod:`currant.plans`
steps, plus "run this job"), and driven by a sync and an async driver that
differ only in how they wait: no SQL or policy is copied from the worker.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .. import codec, limits
from ..errors import Discard, Retry
from ..hooks import Hooks, JobOutcome
from ..job import JobContext
from ..worker.arrays import id_arrays
from ..worker.claimer import in_claim_order
from ..worker.completer import completion_params
from ..worker.lanes import Claimed
from ..worker.limited import sort_out, split_held_back
from ..worker.outcomes import Outcome

# Jobs claimed per round trip; the rest of a batch goes back untouched when
# fail_fast stops the drain.
BATCH = 100
# Past the due time, so a job due "now" on the moved clock is due for sure.
_NUDGE = 0.001
# The drain never sweeps other workers nor prunes: its heartbeat passes these.
_NEVER = 1e9


@dataclass(frozen=True)
class DrainedJob:
    """One attempt the drain ran: what the database recorded."""

    id: int
    task: str
    queue: str
    attempt: int
    outcome: str  # "succeeded", "retrying", "failed" or "cancelled"
    error: str | None = None


@dataclass
class DrainReport:
    """What a drain ran, attempt by attempt, in order."""

    attempts: list[DrainedJob] = field(default_factory=list)
    clock_advanced: float = 0.0  # seconds the database clock was moved

    def __len__(self) -> int:
        return len(self.attempts)

    @property
    def outcomes(self) -> dict[int, str]:
        """Each job's last outcome, by job id."""
        return {attempt.id: attempt.outcome for attempt in self.attempts}

    def ids(self, outcome: str) -> list[int]:
        """The jobs whose last outcome is ``outcome``, in the order they ran."""
        return [job_id for job_id, last in self.outcomes.items() if last == outcome]

    @property
    def succeeded(self) -> list[int]:
        return self.ids("succeeded")

    @property
    def failed(self) -> list[int]:
        return self.ids("failed")


class _Capture(Hooks):
    """The app's hooks, plus a note of the exception that ended the attempt (for fail_fast)."""

    def __init__(self, inner: Hooks) -> None:
        super().__init__()
        self.inner = inner
        self.outcome: JobOutcome | None = None

    def before_job(self, job: JobContext) -> None:
        self.inner.before_job(job)

    def after_job(self, job: JobContext, outcome: JobOutcome) -> None:
        self.outcome = outcome
        self.inner.after_job(job, outcome)

    async def abefore_job(self, job: JobContext) -> None:
        await self.inner.abefore_job(job)

    async def aafter_job(self, job: JobContext, outcome: JobOutcome) -> None:
        self.outcome = outcome
        await self.inner.aafter_job(job, outcome)

    def failure(self) -> BaseException | None:
        """The handler's exception if the attempt failed because of it (not Retry or Discard, which ask for it)."""
        outcome = self.outcome
        if outcome is None or outcome.status in ("succeeded", "cancelled") or outcome.exception is None:
            return None
        if isinstance(outcome.exception, (Retry, Discard)):
            return None
        return outcome.exception


@dataclass
class Session:
    """The drain's worker: set by the loop, read by the drivers (to deregister)."""

    worker_id: int | None = None
    clock_offset: float = 0.0  # where the session's clock stands (seconds ahead), for the next drain
    report: DrainReport = field(default_factory=DrainReport)
    failure: BaseException | None = None


def check_budget(advance_clock: float | timedelta | None) -> float:
    if advance_clock is None:
        return 0.0
    seconds = advance_clock.total_seconds() if isinstance(advance_clock, timedelta) else advance_clock
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < _NEVER:
        raise ValueError(f"advance_clock must be a number of seconds >= 0 or a timedelta, got {advance_clock!r}")
    return float(seconds)


def steps(
    sql: dict[str, str],
    registry: dict[str, Any],
    queues: list[str],
    channel: str,
    fail_fast: bool,
    budget: float,
    session: Session,
    clock_start: float = 0.0,
) -> Generator[tuple[str, Any, Any], Any, None]:
    """The drain, as steps: plans' (fetch, statement, params), or ("run", job, None),
    which the driver answers with (outcome, capture).

    The clock goes on from where this session's or ``clock_start`` (an earlier
    drain's, on a connection of its own) left it, never back."""
    (moved,) = yield ("one", sql["clock_offset"], None)
    start = max(float(moved), clock_start)
    if budget > 0 or start > 0:
        yield ("rowcount", sql["use_test_clock"], None)
    if start > float(moved):
        yield ("one", sql["set_clock_offset"], {"seconds": start})
    session.clock_offset = start
    row = yield (
        "one",
        sql["register_worker"],
        {"hostname": socket.gethostname(), "pid": os.getpid(), "queues": queues, "concurrency": 1},
    )
    session.worker_id = worker = int(row[0])
    limited_tasks = {name: task.limit for name, task in registry.items() if task.limit is not None}
    yield ("rowcount", sql["declare_limits"], limits.declaration((n, t.limit) for n, t in registry.items()))
    offset = start
    while True:
        beat = yield ("all_named", sql["maintain"], _heartbeat(worker, queues, channel))
        state = dict(zip(beat[1], beat[0][0], strict=True))
        ran = 0
        hold: float | None = None
        for queue in queues:
            while True:
                params = {"queue": queue, "limit": BATCH, "worker": worker}
                rows = in_claim_order((yield ("all_binary", sql["claim"], params)))
                # Jobs of limited tasks enqueued without a key (by name, from code that
                # did not know the task) go to their limits, as on a worker.
                rows, handed = sort_out(limited_tasks, rows, worker)
                if handed is not None:
                    yield ("rowcount", sql["hand_to_limits"], handed)
                rows += yield ("all_binary", sql["claim_suspect"], {"queue": queue, "worker": worker})
                limited, held, _waits = split_held_back((yield ("all_binary", sql["claim_limited"], params)))
                rows += limited
                if held is not None:
                    hold = held if hold is None else min(hold, held)
                if not rows:
                    if handed is not None:
                        continue  # a whole batch went to its limits: the jobs behind it are still to run
                    break
                jobs = codec.decode_claimed(rows, queue)
                for index, job in enumerate(jobs):
                    ran += 1
                    outcome, capture = yield ("run", job, None)
                    yield from _complete(sql, worker, job, outcome, session.report)
                    failure = capture.failure() if capture is not None else None
                    if failure is not None and fail_fast:
                        yield from _release(sql, worker, jobs[index + 1 :])
                        session.failure = failure
                        return
        if ran:
            continue
        # Nothing ran: move the clock to the next due job, if the budget allows.
        gaps = [g for g in (_gap(state), hold) if g is not None]
        step = min(gaps) + _NUDGE if gaps else None
        if step is None or offset - start + step > budget:
            return
        offset += step
        session.report.clock_advanced = offset - start
        session.clock_offset = offset
        yield ("one", sql["set_clock_offset"], {"seconds": offset})


def _heartbeat(worker: int, queues: list[str], channel: str) -> dict[str, Any]:
    return {
        "worker": worker,
        "queues": queues,
        "running": [],
        "dead_after": _NEVER,
        "max_rescues": 1_000_000,
        "keep_succeeded": _NEVER,
        "keep_failed": _NEVER,
        "prune_batch": 1,
        "channel": channel,
        "done_queues": [],
        "done_tasks": [],
        "done_outcomes": [],
        "done_counts": [],
    }


def _gap(state: dict[str, Any]) -> float | None:
    """Seconds from the database clock to the next scheduled or retrying job, if any."""
    if state["next_due"] is None:
        return None
    gap: float = (state["next_due"] - state["db_now"]).total_seconds()
    return max(0.0, gap)


def _complete(
    sql: dict[str, str], worker: int, job: Claimed, outcome: Outcome | None, report: DrainReport
) -> Generator[tuple[str, Any, Any], Any, None]:
    """Record one attempt with the worker's completion statements, and report it."""
    job_id, attempt, name, queue = job[0], job[1], job[2], job[7]
    fast, general = completion_params([(job_id, attempt, outcome)], worker)
    state = "lost"  # fenced: another worker owns the job now (only if something swept this one)
    for params in fast:  # one job: at most one statement
        ((recorded, _which),) = yield ("all", sql["complete_succeeded"], params)
        state = "succeeded" if recorded else state
    if general is not None:
        rows = yield ("all", sql["complete_outcomes"], general)
        state = rows[0][1] if rows else state
    error = outcome.error if outcome is not None else None
    report.attempts.append(DrainedJob(job_id, name, queue, attempt, state, error))


def _release(sql: dict[str, str], worker: int, jobs: Iterable[Claimed]) -> Generator[tuple[str, Any, Any], Any, None]:
    """Hand back claimed jobs that never ran, their attempt refunded (the worker's release)."""
    rest = [(job[0], job[1]) for job in jobs]
    if rest:
        ids, attempts = id_arrays(rest)
        yield ("rowcount", sql["release"], {"ids": ids, "attempts": attempts, "worker": worker})
