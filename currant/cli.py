"""``python -m currant.worker``: parse arguments, load the app, run a Worker. No business logic."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from .app import App


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m currant.worker",
        description="Run a Currant worker: claim jobs from PostgreSQL and run them.",
    )
    parser.add_argument("app", metavar="MODULE:APP", help="where the currant.App lives, e.g. myproject.tasks:app")
    parser.add_argument(
        "--dsn",
        help="PostgreSQL connection string (default: the app's, else $CURRANT_DSN, else the embedded server)",
    )
    parser.add_argument("--schema", help="schema holding Currant's tables (default: the app's, $CURRANT_SCHEMA or 'currant')")
    parser.add_argument(
        "--queues", type=_queue_list, help="comma-separated queues, claimed strictly in this order (default: the app's default queue)"
    )
    parser.add_argument("--concurrency", type=_positive_int, default=4, help="jobs run at once, one thread each (default: 4)")
    parser.add_argument("--burst", action="store_true", help="run until no job is ready, then exit 0")
    parser.add_argument(
        "--poll-interval", type=_positive_float, default=1.0, metavar="SECONDS",
        help="fallback poll when no notification arrives (default: 1)",
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=1000,
        help="most jobs claimed per round trip; also the prefetch size (default: 1000)",
    )
    parser.add_argument("--heartbeat", type=_positive_float, default=5.0, metavar="SECONDS", help="heartbeat period (default: 5)")
    parser.add_argument(
        "--dead-after", type=_positive_float, default=30.0, metavar="SECONDS",
        help="a worker silent this long is dead and its jobs are rescued (default: 30)",
    )
    parser.add_argument(
        "--shutdown-grace", type=_positive_float, default=30.0, metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long running jobs may finish (default: 30)",
    )
    parser.add_argument(
        "--db-timeout", type=_positive_float, metavar="SECONDS",
        help="abandon and retry on a new connection any database round trip slower than this"
        " (finds half-open connections; default: --dead-after)",
    )
    parser.add_argument("--max-rescues", type=_positive_int, default=3, help="rescues after which a job is failed as poison (default: 3)")
    parser.add_argument(
        "--keep-succeeded", type=_positive_float, default=24 * 3600.0, metavar="SECONDS",
        help="retention of succeeded jobs (default: 86400)",
    )
    parser.add_argument(
        "--keep-failed", type=_positive_float, default=7 * 24 * 3600.0, metavar="SECONDS",
        help="retention of failed and cancelled jobs (default: 604800)",
    )
    parser.add_argument(
        "--processes", type=_positive_int, default=1,
        help="run this many worker processes under one supervisor that restarts any that dies (default: 1)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def load_app(spec: str) -> App:
    """Import ``module:attribute`` and check that it is a currant.App."""
    from .app import App

    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected MODULE:APP, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        found = "nothing" if app is None else f"a {type(app).__name__}"
        raise ValueError(f"{spec!r} is {found}, not a currant.App")
    return app


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.schema:
        os.environ["CURRANT_SCHEMA"] = args.schema
    if args.dsn:
        os.environ["CURRANT_DSN"] = args.dsn
    from .worker import Worker, WorkerConfig

    try:
        app = load_app(args.app)
        if args.dsn:
            app._dsn = args.dsn
        config = WorkerConfig(
            queues=args.queues or [app.default_queue],
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
        )
    except ValueError as exc:
        print(f"python -m currant.worker: error: {exc}", file=sys.stderr)
        return 2
    if args.processes > 1:
        from .supervisor import supervise

        return supervise(sys.argv[1:] if argv is None else list(argv), args.processes, args.burst)
    worker = Worker(app, config)
    started = time.monotonic()
    try:
        code = asyncio.run(worker.run())
    except KeyboardInterrupt:  # pragma: no cover - signal handlers normally catch this
        code = 130
    elapsed = time.monotonic() - started
    rate = worker.processed / elapsed if elapsed > 0 else 0.0
    print(
        f"currant worker: {worker.processed} jobs processed in {elapsed:.2f} s ({rate:,.0f} jobs/s)",
        file=sys.stderr,
    )
    return code
