"""The completer: records finished attempts, in batches, on the completions connection.

Outcomes arrive from the lanes; whatever is there is flushed at once, so at
low load a lone job is completed right away and under load the outcomes that
pile up while a flush is in flight go together in the next one. On its own
connection, the database records one batch while the claimer claims the next.

Every completion is fenced on (id, attempt, owner, state = running), so
resending a batch whose first try may have committed is safe, and a worker
that lost its lease changes nothing (those rows count as "fenced").
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections import Counter, deque
from typing import Any, TypeVar

import psycopg

from .. import faults
from . import report
from .arrays import id_arrays, int8_array
from .lanes import Lanes
from .links import Connection, Link
from .metrics import WorkerMetrics
from .outcomes import SUCCEEDED, Finished, Outcome, as_failure
from .state import WorkerState

log = logging.getLogger("currant.worker")

_Item = TypeVar("_Item")
_QUEUE_AND_TASK = operator.itemgetter(7, 2)  # of a claimed job (currant.worker.lanes.Claimed)


class Completer:
    def __init__(
        self,
        state: WorkerState,
        lanes: Lanes,
        link: Link,
        sql: dict[str, str],
        max_flush: int,
        metrics: WorkerMetrics | None = None,
        discard_succeeded: bool = False,
    ) -> None:
        self.metrics = metrics
        self._discard_succeeded = discard_succeeded
        self.state = state
        self.lanes = lanes
        self.link = link
        self.sql = sql
        self.max_flush = max_flush
        self._outcome_ready = asyncio.Event()
        self._closed = False

    def wake(self) -> None:
        """A lane reported an outcome."""
        self._outcome_ready.set()

    def close(self) -> None:
        """Flush what is left, then return from :meth:`run`."""
        self._closed = True
        self._outcome_ready.set()

    async def run(self) -> None:
        lanes = self.lanes
        while True:
            if lanes.outcomes:
                lanes.request_wake()
                await self.complete(_take(lanes.outcomes, self.max_flush))
                self.state.wake.set()  # the claimer may be waiting for held jobs to clear
                continue
            if self._closed:
                return
            self._outcome_ready.clear()
            lanes.request_wake()
            if not lanes.outcomes:
                await self._outcome_ready.wait()

    async def complete(self, finished: list[Finished]) -> None:
        """Record finished attempts, through any connection loss."""
        # Decided once per batch: the rotation may turn the archive on or off meanwhile.
        archiving = self.state.archiving and not self._discard_succeeded
        plain_success = self._plain_success(archiving)
        batch = completion_params(finished, self.state.worker_id, archiving)

        def store_plainly(exc: psycopg.Error) -> None:
            # A batch the database refuses (a value it cannot store) must not
            # block every later completion: its special outcomes are resent as
            # plain failures, which always store.
            nonlocal batch
            if batch[1] is not None:
                log.error("storing %d outcomes failed (%s); recording them as failed", len(finished), exc)
                plain = [(job_id, attempt, as_failure(outcome, exc)) for job_id, attempt, outcome in finished]
                batch = completion_params(plain, self.state.worker_id, archiving)

        async def flush(conn: Connection) -> tuple[list[list[Any]], list[Any]]:
            faults.point("before_flush")
            result = await self._send(conn, plain_success, *batch)
            faults.point("after_flush")
            return result

        started = time.perf_counter()
        succeeded, rows = await self.link.run(flush, on_error=store_plainly)
        if self.metrics is not None:
            self.metrics.flushed(time.perf_counter() - started)
        timings = self.lanes.timings
        if timings:  # before the tally: a scrape that sees these jobs counted sees their times too
            await self.lanes.hooks.aafter_batch(_take(timings, len(timings)))
        state = self.state
        held = state.held
        plain = []  # the held jobs sent to the plain-success statements
        for job_id, _attempt, outcome in finished:
            job = held.pop(job_id, None)
            if job is not None and _is_plain(outcome, archiving):
                plain.append(job)
        state.processed += len(finished)
        recorded = len(rows)
        if succeeded:
            # Per attempt number, the ids recorded where not all were (a lease
            # lost meanwhile: rare); a held job's attempt says which statement had it.
            partial: dict[int, set[int]] = {}
            for params, ((count, only),) in zip(batch[0], succeeded, strict=True):
                recorded += count
                if only is not None:
                    partial[params["attempt"]] = set(only)
            if partial:
                plain = [job for job in plain if job[1] not in partial or job[0] in partial[job[1]]]
            for (queue, task), n in Counter(map(_QUEUE_AND_TASK, plain)).items():
                state.tally.add("succeeded", n, queue, task)
        state.tally.add("fenced", len(finished) - recorded)
        if rows:
            outcomes = {job_id: outcome for job_id, _attempt, outcome in finished if outcome is not None}
            report.recorded(rows, outcomes, state.db_now(), state.tally)
            retry_due = _earliest_retry(rows)
            if retry_due is not None:
                state.due_at(retry_due)

    def _plain_success(self, archiving: bool) -> str:
        """How plain successes are recorded (worker.sql): deleted when the worker
        keeps none (keep_succeeded = 0), moved to the archive (every success,
        with its result) when the schema has it on (currant.archive), else
        marked succeeded in place."""
        if self._discard_succeeded:
            return self.sql["complete_succeeded_discarding"]
        if archiving:
            return self.sql["complete_succeeded_archiving"]
        return self.sql["complete_succeeded"]

    async def _send(
        self, conn: Connection, plain_success: str, fast: list[dict[str, Any]], general: dict[str, Any] | None
    ) -> tuple[list[list[Any]], list[Any]]:
        """Send the batch; returns the rows of every statement: per plain-success
        statement how many were recorded (and which, if not all), and each
        other outcome recorded."""
        if len(fast) + (general is not None) > 1 and _PIPELINE_SYNC:
            # Every statement in one network round trip, each its own transaction.
            async with conn.pipeline() as pipeline:
                cursors = []
                for params in fast:
                    cursors.append(await conn.execute(plain_success, params, prepare=True))
                    _sync_point(pipeline)
                general_cur = None
                if general is not None:
                    general_cur = await conn.execute(self.sql["complete_outcomes"], general, prepare=True)
            succeeded = [await cur.fetchall() for cur in cursors]
            return succeeded, (await general_cur.fetchall() if general_cur is not None else [])
        succeeded = []
        rows: list[Any] = []
        for params in fast:
            cur = await conn.execute(plain_success, params, prepare=True)
            succeeded.append(await cur.fetchall())
        if general is not None:
            cur = await conn.execute(self.sql["complete_outcomes"], general, prepare=True)
            rows = await cur.fetchall()
        return succeeded, rows


def completion_params(
    finished: list[Finished], worker: int, archiving: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(params of each complete_succeeded statement, params of complete_outcomes or None).

    The common case, a job that returned None, goes to ``complete_succeeded``:
    one statement per attempt number in the batch (nearly always one), its ids
    as a binary array; when ``archiving``, every success goes to
    ``complete_succeeded_archiving``, with an array of results. Everything else
    goes to ``complete_outcomes`` with one array per column.
    """
    plain: dict[int, list[int]] = {}  # attempt number: ids
    results: dict[int, list[bytes | None]] = {}  # when archiving: the results, in the same order
    other: list[tuple[int, int, Outcome]] = []
    for job_id, attempt, outcome in finished:
        if outcome is None or (archiving and outcome.kind == SUCCEEDED):
            same_attempt = plain.get(attempt)
            if same_attempt is None:
                same_attempt = plain[attempt] = []
                results[attempt] = []
            same_attempt.append(job_id)
            if archiving:
                results[attempt].append(None if outcome is None else outcome.result)
        else:
            other.append((job_id, attempt, outcome))
    fast = []
    for attempt, id_list in plain.items():
        params: dict[str, Any] = {"ids": int8_array(id_list), "attempt": attempt, "worker": worker}
        if archiving:
            params["results"] = results[attempt]
        fast.append(params)
    general = None
    if other:
        ids, attempts = id_arrays((job_id, attempt) for job_id, attempt, _ in other)
        general = {
            "ids": ids,
            "attempts": attempts,
            "kinds": [o.kind for _, _, o in other],
            "results": [o.result for _, _, o in other],
            "errors": [o.error for _, _, o in other],
            "tracebacks": [o.traceback for _, _, o in other],
            "delays": [o.delay for _, _, o in other],
            "max_attempts": [o.max_attempts for _, _, o in other],
            "worker": worker,
        }
    return fast, general


def _is_plain(outcome: Outcome | None, archiving: bool) -> bool:
    """Whether the plain-success statement records this outcome: None (the job
    returned None), and when archiving any success."""
    return outcome is None or (archiving and outcome.kind == SUCCEEDED)


def _take(items: deque[_Item], limit: int) -> list[_Item]:
    popleft = items.popleft
    return [popleft() for _ in range(min(limit, len(items)))]


def _earliest_retry(rows: list[Any]) -> float | None:
    due = [row[3] for row in rows if row[1] == "retrying"]
    return min(due).timestamp() if due else None


# psycopg's public Pipeline.sync() also waits for the results, which would
# cost the round trip the pipeline saves; its internal queueing of a Sync
# message is what is needed. pyproject.toml admits only psycopg versions known
# to have it; without it the two statements go one after the other.
_PIPELINE_SYNC = hasattr(psycopg.AsyncPipeline, "_enqueue_sync")


def _sync_point(pipeline: Any) -> None:
    """End the implicit transaction here without waiting for results."""
    pipeline._enqueue_sync()
