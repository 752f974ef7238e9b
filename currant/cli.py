"""``python -m currant.worker``: parse arguments, load the app, run a Worker. No business logic."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from . import logs
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .app import App
    from .fleet import ListenSpec
    from .worker import WorkerConfig

T = TypeVar("T")
PROG = "python -m currant.worker"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _seconds(text: str, zero_allowed: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value >= 0 if zero_allowed else value > 0):  # `not`: NaN fails both
        wanted = "0 or a positive number" if zero_allowed else "a positive number"
        raise argparse.ArgumentTypeError(f"expected {wanted} of seconds, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return _seconds(text)


def _retention(text: str) -> float:
    """Seconds, 0 included: keeping no finished jobs is a choice (the cheapest)."""
    return _seconds(text, zero_allowed=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _queue_list(text: str) -> list[str]:
    queues = [part.strip() for part in text.split(",") if part.strip()]
    if not queues:
        raise argparse.ArgumentTypeError("expected one or more queue names separated by commas")
    return queues


def build_parser(prog: str = PROG, with_app: bool = True) -> argparse.ArgumentParser:
    """The worker's options; ``with_app=False`` for a caller that brings the App
    (``manage.py currant_worker``)."""
    # No abbreviations: "--proc 2" must not pass for "--processes 2".
    parser = _Parser(
        prog=prog, allow_abbrev=False, description="Run a Currant worker: claim jobs from PostgreSQL and run them."
    )
    add = parser.add_argument
    if with_app:
        add("app", metavar="MODULE:APP", help="where the currant.App lives, e.g. myproject.tasks:app")
    add(
        "--dsn",
        help="PostgreSQL connection string (default: the app's, else $CURRANT_DSN, else the embedded"
        " server); prefer $CURRANT_DSN for one with a password: a command line is visible to every user",
    )
    add(
        "--transaction-pooling",
        action="store_true",
        help="the DSN leads to a transaction-mode pooler such as PgBouncer (pool_mode = transaction): no session"
        " state, no server-side prepared statements; LISTEN needs --listen-dsn (default: $CURRANT_TRANSACTION_POOLING)",
    )
    add(
        "--listen-dsn",
        help="a direct PostgreSQL connection string for LISTEN when --dsn leads to a transaction-mode pooler; without"
        " one such a worker polls (default: $CURRANT_LISTEN_DSN)",
    )
    add("--schema", help="schema holding Currant's tables (default: the app's, $CURRANT_SCHEMA or 'currant')")
    add(
        "--queues",
        type=_queue_list,
        help="comma-separated queues, claimed strictly in this order (default: the app's default queue, then every"
        " queue its tasks declare)",
    )
    add("--concurrency", type=_positive_int, default=4, help="jobs run at once, one thread each (default: 4)")
    add("--burst", action="store_true", help="run until no job is ready, then exit 0")
    add(
        "--poll-interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="fallback poll when no notification arrives (default: 1)",
    )
    add(
        "--batch-size",
        type=_positive_int,
        default=1000,
        help="jobs claimed per round trip, and the prefetch; up to 8x while jobs are short (default: 1000)",
    )
    add("--heartbeat", type=_positive_float, default=5.0, metavar="SECONDS", help="heartbeat period (default: 5)")
    add(
        "--dead-after",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="a worker silent this long is dead and its jobs are rescued (default: 30)",
    )
    add(
        "--shutdown-grace",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long running jobs may finish (default: 30)",
    )
    add(
        "--db-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="abandon and retry on a new connection any database round trip slower than this (finds half-open"
        " connections); with --burst, also how long the database may stay unreachable (default: --dead-after)",
    )
    add(
        "--max-rescues",
        type=_positive_int,
        default=3,
        help="rescues after which a job is failed as poison (default: 3)",
    )
    add(
        "--keep-succeeded",
        type=_retention,
        default=24 * 3600.0,
        metavar="SECONDS",
        help="retention of succeeded jobs (default: 86400); 0 deletes a job that returns None as it completes",
    )
    add(
        "--keep-failed",
        type=_positive_float,
        default=7 * 24 * 3600.0,
        metavar="SECONDS",
        help="retention of failed and cancelled jobs (default: 604800)",
    )
    add(
        "--processes",
        type=_positive_int,
        default=1,
        help="run this many worker processes under one supervisor that restarts any that dies (default: 1)",
    )
    add(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on this port at /metrics; with --processes, the sum over the processes"
        " (default: off)",
    )
    add(
        "--metrics-host",
        default="0.0.0.0",
        metavar="ADDRESS",
        help="the address the metrics server listens on (default: 0.0.0.0)",
    )
    add(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the least severe messages logged (default: INFO)",
    )
    add(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text for people, json for log shippers: one JSON object per line (default: text)",
    )
    return parser


def load_app(spec: str) -> App:
    """Import ``module:attribute`` and check that it is a currant.App."""
    from .app import App

    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"expected MODULE:APP, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigurationError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        found = "nothing" if app is None else f"a {type(app).__name__}"
        raise ConfigurationError(f"{spec!r} is {found}, not a currant.App")
    return app


def served_queues(app: App) -> list[str]:
    """The default queue first, then every other queue the app's tasks declare."""
    queues = [app.default_queue]
    for task in app.tasks.values():
        if task.queue not in queues:
            queues.append(task.queue)
    return queues


def host_listen_spec(app: App, config: WorkerConfig) -> ListenSpec | None:
    """Where the supervisor LISTENs for its children: the DSN, unless it leads
    to a transaction-mode pooler (then --listen-dsn, or nowhere: they poll)."""
    from .fleet import ListenSpec

    dsn = config.listen_dsn or (None if app.transaction_pooling else app.dsn)
    if dsn is None:
        logging.getLogger("currant.supervisor").info(
            "poll-only: the DSN leads to a transaction-mode pooler, which cannot carry LISTEN, and no --listen-dsn"
            " was given; the worker processes find new jobs by polling every %g s",
            config.poll_interval,
        )
        return None
    health = (app.sql["has_ready"], {"queues": config.queues})
    return ListenSpec(dsn, app.channel, config.queues, health, config.round_trip_timeout, app.sql, config.poll_interval)


def event_loop_factory(platform: str = sys.platform) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop the worker runs on. psycopg's async mode needs a selector loop,
    and Windows' default (the Proactor loop) is not one."""
    if platform == "win32":
        return asyncio.SelectorEventLoop
    return None


def run_async(main: Coroutine[Any, Any, T], platform: str = sys.platform) -> T:
    factory = event_loop_factory(platform)
    if factory is None:
        return asyncio.run(main)
    loop = factory()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()


def main(
    argv: Sequence[str] | None = None,
    *,
    app: App | None = None,
    prog: str = PROG,
    queues: list[str] | None = None,
) -> int:
    """Run a worker; with ``app``, for that App (no MODULE:APP argument), serving
    ``queues`` unless --queues says otherwise."""
    from .supervisor import CHILD_MARKER

    parser = build_parser(prog, with_app=app is None)
    args = parser.parse_args(argv)
    if app is not None and args.processes > 1:
        parser.error("--processes is not available here: start the command several times instead")
    logs.configure(args.log_level, args.log_format)
    from .worker import Worker, WorkerConfig
    from .worker.worker import settle_garbage_collector

    label = prog if app is not None else args.app
    try:
        app = app if app is not None else load_app(args.app)
        if args.dsn or args.schema or args.transaction_pooling:
            # The command line wins over what the app module says.
            app.configure(dsn=args.dsn, schema=args.schema, transaction_pooling=args.transaction_pooling or None)
        config = WorkerConfig(
            queues=args.queues or queues or served_queues(app),
            concurrency=args.concurrency,
            burst=args.burst,
            poll_interval=args.poll_interval,
            batch_size=args.batch_size,
            heartbeat=args.heartbeat,
            dead_after=args.dead_after,
            max_rescues=args.max_rescues,
            shutdown_grace=args.shutdown_grace,
            keep_succeeded=args.keep_succeeded,
            keep_failed=args.keep_failed,
            db_timeout=args.db_timeout,
            listen_dsn=args.listen_dsn,
            label=label,
        )
        app.dsn  # noqa: B018 - a malformed $CURRANT_DSN is reported here, in one line
    except (ConfigurationError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.processes > 1 and not os.environ.get(CHILD_MARKER):
        from .supervisor import supervise

        logging.getLogger("currant.supervisor").info("supervising %d worker processes", args.processes)
        given = sys.argv[1:] if argv is None else list(argv)
        listen = host_listen_spec(app, config)
        return supervise(given, args.processes, args.burst, args.metrics_port, args.metrics_host, listen)
    metrics = None
    if args.metrics_port is not None:
        from .worker.metrics import WorkerMetrics, serve
        from .worker.metrics_supervisor import announce

        metrics = WorkerMetrics()
        port = serve(metrics, args.metrics_port, args.metrics_host)
        announce(port)
        logging.getLogger("currant.worker").info("serving metrics on %s:%d/metrics", args.metrics_host, port)
    settle_garbage_collector()
    worker = Worker(app, config, metrics)
    started = time.monotonic()
    try:
        code = run_async(worker.run())
    except KeyboardInterrupt:  # pragma: no cover - signal handlers normally catch this
        code = 130
    elapsed = time.monotonic() - started
    rate = worker.processed / elapsed if elapsed > 0 else 0.0
    print(
        f"currant worker: {worker.processed} jobs processed in {elapsed:.2f} s ({rate:,.0f} jobs/s,"
        f" {worker.state.claims} claims, {worker.state.empty_claims} empty): {worker.state.tally.summary()}",
        file=sys.stderr,
    )
    return code
