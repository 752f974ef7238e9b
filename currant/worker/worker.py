"""The Worker: builds a worker process's parts, runs them, stops them.

A job's way through a worker (see docs/architecture.md):

* the :class:`~currant.worker.claimer.Claimer` claims batches on the claims
  connection into the lanes' local queue;
* the :class:`~currant.worker.lanes.Lanes` run them on threads (async
  handlers on the event loop) and report outcomes;
* the :class:`~currant.worker.completer.Completer` records the outcomes in
  batches on the completions connection.

Beside that path: :class:`~currant.worker.upkeep.Upkeep` (heartbeat,
promotion, rescue, pruning, cron, lease loss) on its own connection, the
:class:`~currant.worker.wakeup.Listener` (LISTEN) on another, and
:func:`~currant.worker.shutdown.shut_down` at the end. Every connection is a
:class:`~currant.worker.links.Link`: the one place for reconnects and backoff.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

from .. import codec
from .. import dsn as dsns
from ..plans import arun_plan
from ..schema import ensure as ensure_schema
from ..supervisor import CHILD_MARKER
from .claimer import Claimer
from .completer import Completer
from .config import WorkerConfig
from .lanes import Lanes
from .limited import LimitedClaims
from .links import WORK_CONNECTION_OPTIONS, Connection, DatabaseRefused, GaveUp, Link
from .metrics import WorkerMetrics
from .progress import ProgressReports
from .shutdown import shut_down
from .state import WorkerState
from .upkeep import Upkeep
from .wakeup import WAKEUP_FD_ENV, HostWakeups, Listener

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("currant.worker")

# A worker asked to stop while it holds no job says goodbye to the database
# for at most this long, then exits whatever the database's state.
QUICK_EXIT = 0.5


def settle_garbage_collector() -> None:
    """For a process that is a worker and nothing else (``python -m currant.worker``).

    Per job a worker allocates a few short-lived containers (rows, tuples, a
    JobContext), and Python's collector ran its youngest generation every 700
    of them: 16 % of a no-op drain's busy worker samples (py-spy, BENCHMARKS.md).
    What start-up made (modules, the app) lives as long as the process:
    frozen, it is never traversed again, and the young generation is
    collected every 50,000 allocations. A job's garbage is still freed by
    reference counting at once; only reference cycles wait a little longer.
    No full collection first: it took 7-12 ms of start-up to find a few dozen
    unreachable objects (``benchmarks/startup.py``), frozen with the rest.
    """
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


class Worker:
    """One worker process's engine. ``await Worker(app, config).run()`` returns an exit code."""

    def __init__(self, app: App, config: WorkerConfig | None = None, metrics: WorkerMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.config = config or WorkerConfig(queues=[app.default_queue])
        self.state = WorkerState(self.config.queues, self.config.burst, self.config.round_trip_timeout)
        self._signals = 0
        self._main: asyncio.Task[Any] | None = None
        self._quick_exit = False
        self._broken: asyncio.Task[Any] | None = None

    @property
    def processed(self) -> int:
        return self.state.processed

    @property
    def worker_id(self) -> int:
        return self.state.worker_id

    async def run(self) -> int:
        self._main = asyncio.current_task()
        try:
            return await self._run()
        except asyncio.CancelledError:
            if self._broken is not None:
                log.critical(
                    "the worker's %s stopped: %r; exiting (held jobs will be rescued)",
                    self._broken.get_name(),
                    self._broken.exception(),
                )
                return 1
            if not self._quick_exit:
                raise
            log.info("stopped before the database answered; this worker held no job")
            return 0

    def _background_ended(self, task: asyncio.Task[Any]) -> None:
        # Upkeep, LISTEN and the watchdog run until cancelled: ending any other
        # way is a bug, and a worker without its heartbeat must not go on.
        if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), GaveUp):
            self._broken = task
            if self._main is not None:
                self._main.cancel()

    async def _run(self) -> int:
        app, config, state = self.app, self.config, self.state
        loop = asyncio.get_running_loop()
        self._install_signal_handlers(loop)
        dsn = await asyncio.to_thread(lambda: app.dsn)  # may start the embedded server

        pooled = app.transaction_pooling

        def link(role: str, options: str = "", target: str = dsn) -> Link:
            return Link(
                role,
                target,
                timeout=config.round_trip_timeout,
                give_up=state.give_up,
                options=options,
                pooled=pooled and target == dsn,
                begin=app.sql["begin_work"],
            )

        claims, completions = link("claims", WORK_CONNECTION_OPTIONS), link("completions", WORK_CONNECTION_OPTIONS)
        claims.sibling, completions.sibling = completions, claims
        # The heartbeat, cron and progress reports share the claims link, one
        # round trip at a time: two connections per worker process (maintain()
        # carries its own planner settings, migration 0008). Not the
        # completions link: a completion waits on any lock held on its rows
        # (a user's long transaction), and a heartbeat queued behind it would
        # lose the lease; a claim skips locked rows and never waits that way.
        upkeep_link = claims
        # Under a supervisor that LISTENs for the host, wake-ups come from it.
        wakeup_fd = os.environ.get(WAKEUP_FD_ENV) if os.environ.get(CHILD_MARKER) else None
        # LISTEN needs a session: through a transaction-mode pooler it goes to
        # the direct --listen-dsn, and without one the worker polls.
        listen_dsn = config.listen_dsn or (None if pooled else dsn)
        listen_link = link("listen", target=listen_dsn) if listen_dsn and wakeup_fd is None else None
        links = tuple(each for each in (claims, completions, listen_link) if each is not None)

        limited = LimitedClaims.of(app.tasks, app.sql)

        def job_finished() -> None:  # called on the loop when a lane reported
            completer.wake()
            state.wake.set()
            if limited is not None:
                limited.job_finished()

        progress = ProgressReports(state, upkeep_link, app.sql, loop)
        metrics = self.metrics
        if metrics is not None:
            app.add_hook(metrics)  # its histograms are filled per batch (after_batch)
        lanes = Lanes(app.tasks, loop, config.concurrency, job_finished, app.hooks, progress.report, state.wake.set)
        if metrics is not None:
            metrics.attach(state, lanes, links)
        completer = Completer(
            state, lanes, completions, app.sql, config.max_flush, metrics, discard_succeeded=config.keep_succeeded == 0
        )
        upkeep = Upkeep(app, state, config, lanes, upkeep_link)
        claimer = Claimer(state, config, lanes, claims, app.sql, app.channel, upkeep.nothing_left, metrics, limited)
        listener: Listener | HostWakeups | None = None
        if wakeup_fd is not None:
            listener = HostWakeups(
                int(wakeup_fd),
                state.queue_ready,
                state.queue_due,
                upkeep.cancel,
                state.jobs_ready,
                self._orphaned,
                on_host_polls=state.host_polling,
            )
            claimer.on_full_batch, claimer.on_capacity = listener.pass_on, listener.capacity
            claimer.spread = listener.others_serve
        elif listen_link is not None:
            listener = Listener(
                listen_link,
                app.channel,
                state.queue_ready,
                state.queue_due,
                upkeep.cancel,
                state.jobs_ready,
                health_check=(app.sql["has_ready"], {"queues": config.queues}),
                on_health=state.polled,
                sql=app.sql,  # this host takes turns with the others (currant.worker.turns)
                queues=config.queues,
            )
            claimer.spread = listener.turns.others_serve
        else:
            log.info(
                "poll-only: the DSN leads to a transaction-mode pooler, which cannot carry LISTEN, and no"
                " --listen-dsn was given; new jobs are found by polling every %g s",
                config.poll_interval,
            )
        background: list[asyncio.Task[Any]] = []
        code = 0
        try:
            # A database that is down at start-up is waited for, like one that
            # goes down later: a serving worker never exits on a database fault.
            await upkeep_link.connection()
            # Connected before the first claim, not at the first completion: a
            # worker that could claim but not complete (the server out of
            # connections by then) would sit on its jobs until rescued. Opened
            # while the schema is checked, once the database answered (a
            # database that is not there is reported once, by the first link).
            opening = asyncio.create_task(completions.connection(), name="currant-connect-completions")
            background.append(opening)  # cancelled with the rest if start-up fails
            await upkeep_link.run(self._check_schema)
            await upkeep.register()
            if limited is not None:
                await upkeep_link.run(lambda conn: limited.declare(conn, app.tasks))
            await opening
            lanes.start()
            background = [
                asyncio.create_task(upkeep.run(), name="currant-upkeep"),
                asyncio.create_task(progress.run(), name="currant-progress"),
            ]
            if listener is not None:
                background.append(asyncio.create_task(listener.run(), name="currant-listener"))
            if any(task.timeout is not None and not task.is_async for task in app.tasks.values()):
                background.append(asyncio.create_task(lanes.watch_deadlines(), name="currant-watchdog"))
            for task in background:
                task.add_done_callback(self._background_ended)
            log.info("%s", self._started_line(dsn))
            completing = asyncio.create_task(completer.run(), name="currant-completer")
            try:
                await claimer.run(completing)
            except BaseException:
                completing.cancel()
                raise

            async def deregister() -> None:
                await claims.run(lambda conn: conn.execute(app.sql["deregister_worker"], {"worker": state.worker_id}))

            await shut_down(
                state=state,
                config=config,
                tasks=app.tasks,
                lanes=lanes,
                claimer=claimer,
                completer=completer,
                completing=completing,
                deregister=deregister,
            )
        except DatabaseRefused as exc:
            log.error("%s", exc)
            code = 1
        except GaveUp as exc:
            if state.held:
                log.error("%s; exiting with %d jobs still leased (they will be rescued)", exc, len(state.held))
            else:
                log.error("%s; exiting", exc)
            code = 1
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            for each in links:
                await each.close()
        log.info(
            "worker %s stopped after %d jobs (%d claims, %d empty): %s",
            state.worker_id,
            state.processed,
            state.claims,
            state.empty_claims,
            state.tally.summary(),
        )
        return code

    def _started_line(self, dsn: str) -> str:
        app, config = self.app, self.config
        served = set(config.queues)
        tasks = ", ".join(
            f"{name}" + (f" [{task.queue}, not served]" if task.queue not in served else "")
            for name, task in sorted(app.tasks.items())
        )
        process = os.environ.get(CHILD_MARKER)
        return (
            f"worker {self.state.worker_id} started (pid {os.getpid()}{f', process {process}' if process else ''})"
            f" for {config.label or 'the app'} on {dsns.describe(dsn)}"
            f"{' (transaction pooling)' if app.transaction_pooling else ''}, schema {app.schema}:"
            f" queues {', '.join(config.queues)}; concurrency {config.concurrency}; core {codec.core_name()};"
            f" tasks: {tasks or 'none'}"
        )

    async def _check_schema(self, conn: Connection) -> None:
        async with conn.transaction():
            await arun_plan(conn, ensure_schema(self.app.schema))
            # Whether successes go to the archive from the first one on;
            # the rotation (upkeep) keeps this current afterwards.
            cur = await conn.execute(self.app.sql["archive_enabled"])
            row = await cur.fetchone()
            self.state.archiving = bool(row and row[0])

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, self.request_stop)
            except NotImplementedError:  # Windows: no add_signal_handler on any loop
                signal.signal(signum, lambda _sig, _frame: loop.call_soon_threadsafe(self.request_stop))
            except RuntimeError:  # pragma: no cover - not the main thread
                pass

    def _orphaned(self) -> None:
        """The supervisor is gone (killed): stop as on a first SIGTERM, unless already stopping."""
        if not self.state.stopping:
            self.request_stop()

    def request_stop(self) -> None:
        """First call: graceful shutdown. Second call: exit at once (jobs left to rescue)."""
        self._signals += 1
        if self._signals > 1:
            log.warning("second stop request: exiting now; held jobs will be rescued")
            os._exit(1)
        state = self.state
        state.begin_stop(self.config.shutdown_grace)
        if state.held:
            log.info(
                "stopping: no more claims; finishing %d held jobs (grace %.0f s)",
                len(state.held),
                self.config.shutdown_grace,
            )
            return
        # Nothing held: a clean goodbye to the database if it answers at once,
        # else exit now; nothing can be lost (a claim that lands meanwhile
        # cancels this and takes the graceful path).
        log.info("stopping")
        asyncio.get_running_loop().call_later(QUICK_EXIT, self._exit_if_nothing_held)

    def _exit_if_nothing_held(self) -> None:
        if not self.state.held and self._main is not None and not self._main.done():
            self._quick_exit = True
            self._main.cancel()
