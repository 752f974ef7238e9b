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
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

from .. import codec
from ..plans import arun_plan
from ..schema import ensure as ensure_schema
from .claimer import Claimer
from .completer import Completer
from .config import WorkerConfig
from .lanes import Lanes
from .links import WORK_CONNECTION_OPTIONS, Connection, GaveUp, Link
from .shutdown import shut_down
from .state import WorkerState
from .upkeep import Upkeep
from .wakeup import Listener

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("currant.worker")


class Worker:
    """One worker process's engine. ``await Worker(app, config).run()`` returns an exit code."""

    def __init__(self, app: App, config: WorkerConfig | None = None) -> None:
        self.app = app
        self.config = config or WorkerConfig(queues=[app.default_queue])
        self.state = WorkerState(self.config.queues)
        self._signals = 0

    @property
    def processed(self) -> int:
        return self.state.processed

    @property
    def worker_id(self) -> int:
        return self.state.worker_id

    async def run(self) -> int:
        app, config, state = self.app, self.config, self.state
        loop = asyncio.get_running_loop()
        dsn = await asyncio.to_thread(lambda: app.dsn)  # may start the embedded server

        def link(role: str, options: str = "") -> Link:
            return Link(role, dsn, timeout=config.round_trip_timeout, give_up=state.give_up, options=options)

        claims, completions = link("claims", WORK_CONNECTION_OPTIONS), link("completions", WORK_CONNECTION_OPTIONS)
        claims.sibling, completions.sibling = completions, claims
        upkeep_link, listen_link = link("upkeep"), link("listen")
        links = (claims, completions, upkeep_link, listen_link)

        def job_finished() -> None:  # called on the loop when a lane reported
            completer.wake()
            state.wake.set()

        lanes = Lanes(app.tasks, loop, config.concurrency, job_finished, app.hooks)
        completer = Completer(state, lanes, completions, app.sql, config.max_flush)
        upkeep = Upkeep(app, state, config, lanes, upkeep_link)
        claimer = Claimer(state, config, lanes, claims, app.sql, app.channel, upkeep.nothing_left)
        listener = Listener(
            listen_link, app.channel, state.queue_ready, state.queue_due, upkeep.cancel, state.jobs_ready,
            health_check=(app.sql["has_ready"], {"queues": config.queues}), on_health=state.polled,
        )
        self._install_signal_handlers(loop)
        background: list[asyncio.Task[Any]] = []
        code = 0
        try:
            # A database that is down at start-up is waited for, like one that
            # goes down later: a worker never exits on a database fault.
            await upkeep_link.run(self._check_schema)
            await upkeep.register()
            lanes.start()
            background = [
                asyncio.create_task(listener.run(), name="currant-listener"),
                asyncio.create_task(upkeep.run(), name="currant-upkeep"),
            ]
            if any(task.timeout is not None and not task.is_async for task in app.tasks.values()):
                background.append(asyncio.create_task(lanes.watch_deadlines(), name="currant-watchdog"))
            log.info(
                "worker %s started: queues=%s concurrency=%d core=%s",
                state.worker_id, ",".join(config.queues), config.concurrency, codec.__name__,
            )
            completing = asyncio.create_task(completer.run(), name="currant-completer")
            try:
                await claimer.run(completing)
            except BaseException:
                completing.cancel()
                raise

            async def deregister() -> None:
                await claims.run(lambda conn: conn.execute(app.sql["deregister_worker"], {"worker": state.worker_id}))

            await shut_down(
                state=state, config=config, tasks=app.tasks, lanes=lanes, claimer=claimer, completer=completer,
                completing=completing, deregister=deregister,
            )
        except GaveUp as exc:
            log.error("%s; exiting with jobs still leased (they will be rescued)", exc)
            code = 1
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            for each in links:
                await each.close()
        log.info("worker %s stopped after %d jobs", state.worker_id, state.processed)
        return code

    async def _check_schema(self, conn: Connection) -> None:
        async with conn.transaction():
            await arun_plan(conn, ensure_schema(self.app.schema))

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
        self.state.begin_stop(self.config.shutdown_grace)

