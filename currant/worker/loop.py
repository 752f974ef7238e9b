"""The worker: claim → run → complete, on one asyncio loop and a few lane threads.

Four coroutines share the loop:

* the *claimer* owns the work connection: when the local queue is below its
  low-water mark (and jobs are ready), it claims a batch.
* the *completer* owns the completion connection and reports every finished
  attempt. Under load outcomes pile up while a flush is in flight, so batches
  grow by themselves; at low load a lone job is completed at once. Being two
  connections, the database claims the next batch while it records the last.
* the *maintainer* owns a third connection: heartbeat, promotion of due jobs,
  rescue of dead workers' jobs, pruning, cancel checks and cron, all in one
  statement per heartbeat (see ``maintain`` in the migrations).
* the *listener* owns the LISTEN connection (:mod:`currant.worker.wakeup`).

Jobs run on the lanes (:mod:`currant.worker.lanes`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from .. import codec, faults, schema
from .completions import completion_params, id_arrays, register_array_dumpers
from .lanes import DEFAULT_MAX_ATTEMPTS, FAILED, RETRY, Claimed, Lanes, Outcome
from .wakeup import Listener

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("currant.worker")

# Errors after which the connection is replaced and the round trip retried.
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, OSError)
# Errors that abort one round trip but leave the connection usable.
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.LockNotAvailable)

# TCP keepalives so a dead peer is noticed by the kernel even while idle.
CONNECT_KWARGS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "application_name": "currant-worker",
}


# Every statement on the claim/complete connection reaches a few hundred rows
# by index, and two planner traps turned that into whole-table work:
# * statistics taken when no job was running estimate 1 row for "running jobs
#   of this worker", and the planner answered with a nested loop comparing every
#   row with every id (150 ms instead of 7 ms per 1,000 completions);
# * a generic plan cached while the table was nearly empty kept scanning the
#   whole table for every claim once it had grown (110-185 ms instead of 6 ms,
#   under sustained load);
# * with no statistics at all (a big enqueue into a new table) the claim
#   bitmap-scanned and sorted the whole backlog (130 ms instead of 2 ms).
# So: no nested loops, no sequential or bitmap scans (the claim walks its
# index in order and stops at LIMIT), and a fresh plan per execution
# (cheap next to a 1,000-row claim; prepared statements still skip parsing).
WORK_CONNECTION_OPTIONS = (
    "-c enable_nestloop=off -c enable_seqscan=off -c enable_bitmapscan=off -c plan_cache_mode=force_custom_plan"
)


class _GaveUp(Exception):
    """Shutting down, and the database stayed unreachable past the grace period."""


@dataclass
class WorkerConfig:
    queues: list[str] = field(default_factory=lambda: ["default"])
    concurrency: int = 4
    burst: bool = False
    poll_interval: float = 1.0
    batch_size: int = 1000
    heartbeat: float = 5.0
    dead_after: float = 30.0
    max_rescues: int = 3
    shutdown_grace: float = 30.0
    keep_succeeded: float = 24 * 3600.0
    keep_failed: float = 7 * 24 * 3600.0
    prune_batch: int = 10_000
    max_flush: int = 10_000
    # A round trip that takes longer is abandoned and retried on a new
    # connection: the only way to notice a half-open TCP connection, which
    # keepalives cannot see while a proxy on the path still answers them.
    # Default: dead_after (past it, the lease is lost anyway).
    db_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if self.poll_interval <= 0:
            raise ValueError(f"poll interval must be positive, got {self.poll_interval}")
        if self.heartbeat <= 0 or self.dead_after <= self.heartbeat:
            raise ValueError(
                f"need 0 < heartbeat ({self.heartbeat}) < dead_after ({self.dead_after})"
            )
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        if self.db_timeout is None:
            self.db_timeout = self.dead_after
        elif self.db_timeout <= 0:
            raise ValueError(f"db timeout must be positive, got {self.db_timeout}")


class Worker:
    """One worker process's engine. ``await Worker(app, config).run()`` returns an exit code."""

    def __init__(self, app: App, config: WorkerConfig | None = None) -> None:
        self.app = app
        self.config = config or WorkerConfig(queues=[app.default_queue])
        self.sql = app.sql
        self.low_water = max(1, self.config.batch_size // 2)
        self._db_timeout = float(self.config.db_timeout or self.config.dead_after)
        self.worker_id = 0
        self.held: dict[int, int] = {}  # job id -> attempt, for every job leased to us
        self.processed = 0
        self.fenced = 0
        self.stopping = False
        self._signals = 0
        self._stop_deadline = float("inf")
        self._event = asyncio.Event()
        self._claim_ready = True
        self._suspects = False  # rescued jobs are waiting to be run one at a time
        self._wake_seq = 0
        self._last_poll = 0.0
        self._next_due: float | None = None  # epoch seconds of the earliest known due job
        self._next_beat = 0.0  # monotonic time of the next heartbeat
        self._maintain_now = asyncio.Event()
        self._work: psycopg.AsyncConnection[Any] | None = None  # claims
        self._done: psycopg.AsyncConnection[Any] | None = None  # completions
        self._completer_task: asyncio.Task[None] | None = None
        self._completions_closed = False
        self._busy = {False: False, True: False}  # round trip in flight, by completions=
        self._outcome_ready = asyncio.Event()
        self._maint: psycopg.AsyncConnection[Any] | None = None
        self._maint_lock = asyncio.Lock()
        self._reregistering = False
        self._reconciled = True
        self._clock_offset = 0.0  # database clock minus local clock, from the last heartbeat
        self.lanes: Lanes | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # -- entry point -------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        dsn = await asyncio.to_thread(lambda: self.app.dsn)
        self.dsn = dsn
        self.lanes = Lanes(self.app.tasks, loop, self.config.concurrency, self._wake)
        self._install_signal_handlers(loop)
        # A database that is down at start-up is waited for, like one that
        # goes down later: a worker never exits on a database fault.
        await self._retrying("schema check", lambda: asyncio.to_thread(self._ensure_schema))
        await self._retrying("registration", self._register)
        self.lanes.start()
        listener = Listener(
            dsn, self.app.channel, CONNECT_KWARGS, self._on_ready, self._on_due, self._on_cancel, self._on_listening,
            health_check=(self.sql["has_ready"], {"queues": self.config.queues}),
            on_health=self._on_health,
            health_check_after=self._db_timeout,
        )
        self._tasks = [
            asyncio.create_task(listener.run(), name="currant-listener"),
            asyncio.create_task(self._maintainer(), name="currant-maintainer"),
        ]
        if any(task.timeout is not None and not task.is_async for task in self.app.tasks.values()):
            self._tasks.append(asyncio.create_task(self._watchdog(), name="currant-watchdog"))
        log.info(
            "worker %s started: queues=%s concurrency=%d core=%s",
            self.worker_id, ",".join(self.config.queues), self.config.concurrency, codec.__name__,
        )
        code = 0
        try:
            await self._pump()
            await self._shutdown()
        except _GaveUp as exc:
            log.error("%s; exiting with jobs still leased (they will be rescued)", exc)
            code = 1
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for conn in (self._work, self._done, self._maint):
                if conn is not None:
                    await conn.close()
        log.info("worker %s stopped after %d jobs", self.worker_id, self.processed)
        return code

    async def _retrying(self, what: str, action: Callable[[], Any]) -> Any:
        """Await ``action()`` until it gets through a connection failure."""
        backoff = 0.05
        while True:
            try:
                return await asyncio.wait_for(action(), self._db_timeout)
            except (*_CONNECTION_ERRORS, asyncio.TimeoutError) as exc:
                self._check_stop_deadline(what)
                log.warning("%s failed (%s); retrying in %.2f s", what, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _check_stop_deadline(self, what: str) -> None:
        if self.stopping and time.monotonic() > self._stop_deadline:
            raise _GaveUp(f"{what}: the database stayed unreachable through the shutdown grace period")

    def _ensure_schema(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            if schema.current_version(conn, self.app.schema) != schema.latest_version(self.app.schema):
                schema.migrate(conn, self.app.schema)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, self.request_stop)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
                pass

    def request_stop(self) -> None:
        """First call: graceful shutdown. Second call: exit at once (jobs left to rescue)."""
        self._signals += 1
        if self._signals > 1:
            log.warning("second stop request: exiting now; held jobs will be rescued")
            os._exit(1)
        log.info("stopping: no more claims; finishing running jobs (grace %.0f s)", self.config.shutdown_grace)
        self.stopping = True
        self._stop_deadline = time.monotonic() + self.config.shutdown_grace
        self._event.set()

    # -- wake-ups (all on the loop thread) ------------------------------------

    def _wake(self) -> None:
        # A lane finished a job: something to report, and room in the local queue.
        self._outcome_ready.set()
        self._event.set()

    def _on_ready(self, queue: str) -> None:
        if queue in self.config.queues:
            self._claim_ready = True
            self._wake_seq += 1
            self._event.set()

    def _on_listening(self) -> None:
        # LISTEN is in place: claim once, for anything committed while we were not listening.
        self._claim_ready = True
        self._wake_seq += 1
        self._event.set()

    def _on_health(self, ready: bool) -> None:
        # The listener's health check looked for ready jobs: it was this moment's poll.
        self._last_poll = time.monotonic()
        if ready:
            self._claim_ready = True
            self._wake_seq += 1
        self._event.set()

    def _on_due(self, queue: str, when: float) -> None:
        if queue in self.config.queues and (self._next_due is None or when < self._next_due):
            self._next_due = when
            self._maintain_now.set()  # re-arm the maintainer's timer

    def _on_cancel(self, job_id: int) -> None:
        if self.lanes is not None and job_id in self.held:
            self.lanes.cancel(job_id)

    # -- connections -------------------------------------------------------------

    async def _connect(self, options: str = "") -> psycopg.AsyncConnection[Any]:
        backoff = 0.05
        kwargs = dict(CONNECT_KWARGS)
        if options:
            # An explicit options parameter hides $PGOPTIONS from libpq: keep both.
            given = conninfo_to_dict(self.dsn).get("options") or os.environ.get("PGOPTIONS")
            kwargs["options"] = f"{given} {options}" if given else options
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, **kwargs)
                register_array_dumpers(conn)
                return conn
            except _CONNECTION_ERRORS as exc:
                self._check_stop_deadline("connecting")
                log.warning("cannot connect (%s); retrying in %.2f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _completion_conn(self) -> psycopg.AsyncConnection[Any]:
        if self._done is None or self._done.closed or self._done.broken:
            self._done = await self._connect(WORK_CONNECTION_OPTIONS)
        return self._done

    async def _work_conn(self) -> psycopg.AsyncConnection[Any]:
        if self._work is None or self._work.closed or self._work.broken:
            self._work = await self._connect(WORK_CONNECTION_OPTIONS)
        if not self._reconciled:
            # The last round trip died: a claim may have committed without us
            # seeing its rows. Hand back whatever is leased to us that we do not hold.
            cur = await self._work.execute(
                self.sql["release_unknown"], {"worker": self.worker_id, "held": list(self.held)}
            )
            returned = cur.rowcount
            if returned:
                log.warning("returned %d jobs claimed by a round trip whose answer was lost", returned)
            self._reconciled = True
        return self._work

    async def _register(self) -> None:
        conn = await self._maint_conn()
        cur = await conn.execute(
            self.sql["register_worker"],
            {"hostname": socket.gethostname(), "pid": os.getpid(), "queues": self.config.queues},
        )
        row = await cur.fetchone()
        assert row is not None
        self.worker_id = int(row[0])

    async def _maint_conn(self) -> psycopg.AsyncConnection[Any]:
        async with self._maint_lock:  # the maintainer and a burst pump may ask at once
            if self._maint is None or self._maint.closed or self._maint.broken:
                self._maint = await self._connect()
            return self._maint

    # -- the claimer and the completer ----------------------------------------------

    async def _pump(self) -> None:
        """Claim on the work connection while the completer reports outcomes on its own.

        Two connections, two backends: the database claims the next batch while
        it records the last one, so one worker process keeps both cores busy.
        """
        completer = asyncio.create_task(self._completer(), name="currant-completer")
        self._completer_task = completer
        try:
            await self._claimer()
        except BaseException:
            completer.cancel()
            raise

    async def _claimer(self) -> None:
        lanes = self.lanes
        assert lanes is not None
        config = self.config
        while True:
            if self._completer_task is not None and self._completer_task.done():
                self._completer_task.result()  # the completer died: raise what killed it
                raise RuntimeError("the completer stopped while the worker runs")
            # Rescued jobs run alone: drain what we hold first, then take one.
            suspects_wait = self._suspects and not self.stopping
            if suspects_wait and not self.held:
                await self._run_suspect()
                continue
            room = lanes.local.qsize() <= self.low_water
            if not self.stopping and not suspects_wait and self._claim_ready and room:
                limit = config.batch_size - lanes.local.qsize()
                seq = self._wake_seq
                claimed = await self._claim(limit)
                self._last_poll = time.monotonic()
                if claimed:
                    self._dispatch(claimed)
                if len(claimed) < limit and seq == self._wake_seq:
                    self._claim_ready = False  # the queue is empty: wait for a notification or the poll
                continue
            if self.stopping:
                return
            if config.burst and not self.held and await self._burst_finished():
                self.stopping = True
                return
            due = self._last_poll + config.poll_interval
            if abs(due - self._next_beat) < config.poll_interval / 2:
                # The heartbeat about then checks for ready jobs too: let it be
                # this poll, so an idle worker sends one statement per interval.
                due = self._next_beat + config.poll_interval
            timeout = due - time.monotonic()
            if timeout <= 0:
                self._claim_ready = True  # the fallback poll is due
                if room and not suspects_wait:
                    continue
                # Nowhere to put a claim yet: wait for the lanes to make room
                # or the completer to clear what we hold (both wake us).
                timeout = config.poll_interval
            self._event.clear()
            lanes.request_wake()  # the next finished job wakes us: the local queue shrank
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
            except asyncio.TimeoutError:
                self._claim_ready = True  # the fallback poll

    async def _completer(self) -> None:
        """Report finished attempts as they come; under load, batches grow while one is in flight."""
        lanes = self.lanes
        assert lanes is not None
        while True:
            if lanes.outcomes:
                lanes.request_wake()
                await self._complete(_drain(lanes.outcomes, self.config.max_flush))
                self._event.set()  # the claimer may be waiting for held jobs to clear
                continue
            if self._completions_closed:
                return
            self._outcome_ready.clear()
            lanes.request_wake()
            if not lanes.outcomes:
                await self._outcome_ready.wait()

    def _dispatch(self, rows: list[Any]) -> None:
        assert self.lanes is not None
        held = self.held
        put = self.lanes.local.put
        for job in codec.decode_claimed(rows):
            held[job[0]] = job[1]
            put(job)
        faults.point("after_claim_commit")

    async def _run_suspect(self) -> None:
        """Claim one rescued job and let it run alone (nothing else is held)."""
        for queue in self.config.queues:
            params = {"queue": queue, "worker": self.worker_id}
            rows = await self._with_reconnect(functools.partial(self._fetch, name="claim_suspect", params=params))
            if rows:
                log.warning("running rescued job %s alone", rows[0][0])
                self._dispatch(rows)
                return
        self._suspects = False

    async def _fetch(self, conn: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any]) -> list[Any]:
        cur = await conn.execute(self.sql[name], params, prepare=True)
        return list(await cur.fetchall())

    async def _burst_finished(self) -> bool:
        """Burst mode: done when nothing is held and, after promoting due jobs, nothing is ready."""
        row = await self._maintain_once()
        if row is None:
            await asyncio.sleep(0.2)  # the database is unreachable: that is not "nothing to do"
            return False
        if row["promoted"] or row["has_work"] or row["suspects"]:
            self._claim_ready = True
            return False
        return True

    async def _claim(self, limit: int) -> list[Any]:
        """Claim up to ``limit`` jobs; several queues strictly in the order given,
        the next one only when the ones before it could not fill the batch."""
        sql = self.sql

        async def claim(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
            claimed: list[Any] = []
            for queue in self.config.queues:
                if len(claimed) >= limit:
                    break
                params = {"queue": queue, "limit": limit - len(claimed), "worker": self.worker_id}
                cur = await conn.execute(sql["claim"], params, prepare=True)
                claimed.extend(await cur.fetchall())
            return claimed

        claimed: list[Any] = await self._with_reconnect(claim)
        return claimed

    async def _complete(self, finished: list[Any]) -> None:
        """Record finished attempts; retry through connection loss.

        Completions are idempotent thanks to the fence, so resending a batch
        whose first try may have committed is safe.
        """
        batch: dict[str, dict[str, Any] | None] = {"fast": None, "general": None}
        batch["fast"], batch["general"] = completion_params(finished, self.worker_id)

        def plainer(exc: psycopg.Error) -> None:
            # A batch the database refuses (a value it cannot store) must not
            # block every later completion: its special outcomes are resent as
            # plain failures, which always store.
            if batch["general"] is not None:
                log.error("storing %d outcomes failed (%s); recording them as failed", len(finished), exc)
                plain = [
                    (job_id, attempt, outcome if outcome is None else Outcome(
                        FAILED, error=f"OutcomeError: the database refused this attempt's outcome: {type(exc).__name__}"))
                    for job_id, attempt, outcome in finished
                ]
                batch["fast"], batch["general"] = completion_params(plain, self.worker_id)

        async def flush(conn: psycopg.AsyncConnection[Any]) -> tuple[float | None, int]:
            faults.point("before_flush")
            retry_due, updated = await self._send_completions(conn, batch["fast"], batch["general"])
            faults.point("after_flush")
            return retry_due, updated

        retry_due, updated = await self._with_reconnect(flush, on_error=plainer, completions=True)
        for job_id, _attempt, _outcome in finished:
            self.held.pop(job_id, None)
        self.processed += len(finished)
        self.fenced += len(finished) - updated
        if retry_due is not None and (self._next_due is None or retry_due < self._next_due):
            self._next_due = retry_due
            self._maintain_now.set()

    async def _with_reconnect(
        self,
        action: Callable[[psycopg.AsyncConnection[Any]], Any],
        on_error: Callable[[psycopg.Error], None] | None = None,
        completions: bool = False,
    ) -> Any:
        """Run ``action(connection)`` on the work connection (or the completion
        connection), reconnecting and retrying until it succeeds."""
        backoff = 0.05
        get_conn = self._completion_conn if completions else self._work_conn
        while True:
            try:
                conn = await asyncio.wait_for(get_conn(), self._db_timeout)
                self._busy[completions] = True
                try:
                    return await asyncio.wait_for(action(conn), self._db_timeout)
                finally:
                    self._busy[completions] = False
            except (*_CONNECTION_ERRORS, asyncio.TimeoutError) as exc:
                self._check_stop_deadline("round trip")
                reason = f"no answer within {self._db_timeout:g} s" if isinstance(exc, asyncio.TimeoutError) else exc
                log.warning("database round trip failed (%s); reconnecting", reason)
                await self._drop_connection(completions)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except _RETRYABLE as exc:
                self._check_stop_deadline("round trip")
                log.info("round trip hit %s; retrying", type(exc).__name__)
                await asyncio.sleep(backoff)
            except psycopg.Error as exc:
                # Not a connection problem, but never a reason to exit: log it,
                # make sure no claim was lost, and try again more slowly.
                self._check_stop_deadline("round trip")
                log.error("database error in a round trip (%s: %s); retrying", type(exc).__name__, exc)
                if not completions:
                    self._reconciled = False
                if on_error is not None:
                    on_error(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _drop_connection(self, completions: bool) -> None:
        """Close the connection that failed, and its sibling if it is idle.

        Both usually die together (a restart, a dead network path), and a
        half-open connection is only found out by a round trip timing out: an
        idle sibling kept would cost a second timeout on its next use.
        """
        for which in (completions, not completions):
            if which != completions and self._busy[which]:
                continue  # in a round trip: its own timeout will tell
            if which:
                conn, self._done = self._done, None
            else:
                # A claim may have committed without us seeing its rows:
                # reconcile on the next connection.
                self._reconciled = False
                conn, self._work = self._work, None
            if conn is not None:
                await conn.close()

    async def _send_completions(
        self, conn: psycopg.AsyncConnection[Any], fast: dict[str, Any] | None, general: dict[str, Any] | None
    ) -> tuple[float | None, int]:
        retry_due: float | None = None
        updated = 0
        if fast and general:
            # Both kinds in one network round trip, each its own transaction.
            async with conn.pipeline() as pipeline:
                fast_cur = await conn.execute(self.sql["complete_succeeded"], fast, prepare=True)
                _sync_point(pipeline)
                general_cur = await conn.execute(self.sql["complete_outcomes"], general, prepare=True)
            updated += fast_cur.rowcount
            outcome_rows = await general_cur.fetchall()
            return _earliest_retry(outcome_rows), updated + len(outcome_rows)
        if fast:
            cur = await conn.execute(self.sql["complete_succeeded"], fast, prepare=True)
            updated += cur.rowcount
        if general:
            cur = await conn.execute(self.sql["complete_outcomes"], general, prepare=True)
            outcome_rows = await cur.fetchall()
            updated += len(outcome_rows)
            retry_due = _earliest_retry(outcome_rows)
        return retry_due, updated

    # -- shutdown ------------------------------------------------------------------

    async def _shutdown(self) -> None:
        lanes = self.lanes
        assert lanes is not None
        unstarted = lanes.stop()
        if unstarted:
            await self._release(unstarted)
        # Keep reporting finished jobs while the rest finish, so a SIGKILL at
        # the end of the grace period re-runs only what was still running.
        # The completer goes on flushing until the lanes are done, then
        # flushes what is left and returns.
        finished = await asyncio.to_thread(lanes.join, self.config.shutdown_grace)
        self._completions_closed = True
        self._outcome_ready.set()
        if self._completer_task is not None:
            await self._completer_task
        if not finished:
            # Still running after the grace period: recorded as interrupted (and
            # retried), each with its own task's attempt limit.
            stuck = []
            for job_id, attempt in list(self.held.items()):
                context = lanes.active.get(job_id)
                task = self.app.tasks.get(context.task) if context is not None else None
                stuck.append((job_id, attempt, Outcome(
                    RETRY, error="WorkerShutdown: interrupted by shutdown", delay=0.0,
                    max_attempts=task.max_attempts if task is not None else DEFAULT_MAX_ATTEMPTS,
                )))
            log.warning("%d jobs still running after the grace period; reporting them interrupted", len(stuck))
            if stuck:
                await self._complete(stuck)
        # Deregistering also hands back anything still leased to this worker.
        await self._with_reconnect(
            lambda conn: conn.execute(self.sql["deregister_worker"], {"worker": self.worker_id})
        )

    async def _release(self, jobs: list[Claimed]) -> None:
        """Hand back claimed jobs that never started, their attempt refunded."""
        ids, attempts = id_arrays((job[0], job[1]) for job in jobs)
        params = {"ids": ids, "attempts": attempts, "worker": self.worker_id}

        async def hand_back(conn: psycopg.AsyncConnection[Any]) -> None:
            cur = await conn.execute(self.sql["release"], params)
            for queue in {row[0] for row in await cur.fetchall()}:
                await conn.execute(self.sql["notify"], {"channel": self.app.channel, "payload": f"r:{queue}"})

        await self._with_reconnect(hand_back)
        for job in jobs:
            self.held.pop(job[0], None)
        log.info("returned %d prefetched jobs to the queue", len(jobs))

    # -- the maintainer --------------------------------------------------------------

    async def _maintainer(self) -> None:
        from .cron import CronScheduler

        cron = CronScheduler(self.app, self._maint_conn) if self.app.periodics else None
        cron_ready = False
        # With periodic tasks, the first round (which registers them) runs at once.
        self._next_beat = time.monotonic() + (0.0 if cron is not None else self.config.heartbeat)
        last_beat = 0.0
        while True:
            now = time.monotonic()
            wake_at = self._next_beat
            if self._next_due is not None:
                wake_at = min(wake_at, now + max(0.0, self._next_due - (time.time() + self._clock_offset)))
            if cron is not None and cron_ready:
                wake_at = min(wake_at, cron.next_wake(self._clock_offset))
            # Never faster than every 50 ms: a due job another worker is
            # promoting right now must not make this loop spin.
            wake_at = max(wake_at, last_beat + 0.05)
            self._maintain_now.clear()
            try:
                await asyncio.wait_for(self._maintain_now.wait(), max(0.0, wake_at - now))
                continue  # re-arm with the new due time
            except asyncio.TimeoutError:
                pass
            last_beat = time.monotonic()
            # The heartbeat must go on whatever fails: a worker whose
            # heartbeat stopped would be declared dead while it works.
            try:
                await self._maintain_once()
                if cron is not None:
                    if not cron_ready:
                        await asyncio.wait_for(cron.register(), self._db_timeout)
                        cron_ready = True
                    await asyncio.wait_for(cron.fire_due(self._clock_offset), self._db_timeout)
            except _GaveUp:
                raise
            except Exception:  # noqa: BLE001
                log.exception("maintenance failed; will retry at the next heartbeat")
            self._next_beat = last_beat + self.config.heartbeat

    async def _maintain_once(self) -> dict[str, Any] | None:
        """One heartbeat; returns its row, or None if the database could not be reached."""
        running = [job_id for job_id in self.held]
        params = {
            "worker": self.worker_id,
            "queues": self.config.queues,
            "running": running,
            "dead_after": self.config.dead_after,
            "max_rescues": self.config.max_rescues,
            "keep_succeeded": self.config.keep_succeeded,
            "keep_failed": self.config.keep_failed,
            "prune_batch": self.config.prune_batch,
            "channel": self.app.channel,
        }
        async def beat() -> tuple[Any, Any]:
            conn = await self._maint_conn()
            faults.point("rescue_sweep")
            cur = await conn.execute(self.sql["maintain"], params, prepare=True)
            return cur, await cur.fetchone()

        try:
            cur, values = await asyncio.wait_for(beat(), self._db_timeout)
        except (*_CONNECTION_ERRORS, asyncio.TimeoutError) as exc:
            log.warning("heartbeat failed (%s); will retry", exc if str(exc) else type(exc).__name__)
            if self._maint is not None:
                await self._maint.close()
            return None
        assert values is not None and cur.description is not None
        row = dict(zip((column.name for column in cur.description), values))
        self._clock_offset = row["db_now"].timestamp() - time.time()
        self._next_due = row["next_due"].timestamp() if row["next_due"] is not None else None
        if row["rescued"]:
            log.warning("rescued %d jobs of dead workers (%d failed as poison)", row["rescued"], row["poisoned"])
        if row["pruned"]:
            log.info("pruned %d finished jobs past retention", row["pruned"])
        for job_id in row["cancel_ids"] or ():
            self._on_cancel(job_id)
        if not row["alive"]:
            await self._lease_lost()
        if row["suspects"] and not self._suspects:
            self._suspects = True
            self._event.set()
        if row["has_work"]:
            self._claim_ready = True
            self._event.set()
        else:
            self._last_poll = time.monotonic()  # as good as a poll: nothing is ready
        self._event.set()  # let the pump re-plan its next poll
        return row

    async def _lease_lost(self) -> None:
        """Our registration was swept (we were silent past dead_after): our jobs
        were rescued, so drop what we prefetched and register anew."""
        assert self.lanes is not None
        if self._reregistering:
            return
        self._reregistering = True
        try:
            await self._reregister()
        finally:
            self._reregistering = False

    async def _reregister(self) -> None:
        assert self.lanes is not None
        dropped = self.lanes.take_unstarted()
        for job in dropped:
            self.held.pop(job[0], None)
        log.error(
            "worker %s was declared dead (no heartbeat for %.0f s); its jobs were rescued;"
            " dropped %d prefetched jobs and registering again",
            self.worker_id, self.config.dead_after, len(dropped),
        )
        await self._register()

    async def _watchdog(self) -> None:
        assert self.lanes is not None
        while True:
            await asyncio.sleep(0.05)
            expired = self.lanes.expire_deadlines()
            if expired:
                self.lanes.outcomes.extend(expired)
                self._wake()


def _drain(outcomes: Any, limit: int) -> list[Any]:
    popleft = outcomes.popleft
    return [popleft() for _ in range(min(limit, len(outcomes)))]


def _earliest_retry(rows: list[Any]) -> float | None:
    due = [run_at for _id, state, _queue, run_at in rows if state == "retrying"]
    return min(due).timestamp() if due else None


def _sync_point(pipeline: Any) -> None:
    """End the implicit transaction here without waiting for results.

    psycopg's public ``Pipeline.sync()`` also waits for the results, which
    would cost the round trip we are saving; its internal queueing of a Sync
    message is what we need.
    """
    pipeline._enqueue_sync()

