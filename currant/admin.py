"""``python -m currant``: the admin CLI.

It needs no app module: only the DSN (``--dsn`` or ``$CURRANT_DSN``, else the
embedded server) and the schema. Human-readable output by default, ``--json``
(before or after the command) for scripts. Every failure is one line on
stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, NoReturn, TextIO

import psycopg

from . import archive, console, embedded
from .app import App
from .control import LIVE_STATES, PURGEABLE_STATES
from .drivers import DEFAULT_CONNECT_TIMEOUT
from .errors import CurrantError
from .job import STATES
from .schema import current_version

PROG = "python -m currant"
TOP_INTERVAL = 1.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # --json may come before or after the command: both parsers know it, and a
    # command's own default never overwrites what the top level saw.
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")
    parser = _Parser(prog=PROG, allow_abbrev=False, parents=[common], description="Administer a Currant queue.")
    parser.add_argument("--dsn", help="PostgreSQL connection string (default: $CURRANT_DSN, else the embedded server)")
    parser.add_argument("--schema", help="schema of Currant's tables (default: $CURRANT_SCHEMA or 'currant')")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up on the database after this long (default: {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[common], allow_abbrev=False)

    command("migrate", "create or upgrade the schema")
    command("stats", "jobs per queue and state, and the oldest ready job's age")
    for name, help in (("failed", "the newest failed jobs"), ("list", "the newest jobs in a state")):
        listing = command(name, help)
        if name == "list":
            listing.add_argument("state", choices=STATES)
        listing.add_argument("--queue", help="only jobs of this queue")
        listing.add_argument("--task", help="only jobs of this task")
        listing.add_argument("--limit", type=_positive_int, default=50, help="at most this many jobs (default: 50)")
    show = command("show", "one job in full: arguments, result, every attempt's error and traceback")
    show.add_argument("id", type=int, metavar="JOB_ID")
    for name, help in (
        ("retry", "queue failed or cancelled jobs again"),
        ("cancel", "cancel jobs (running ones are asked to stop)"),
    ):
        command(name, help).add_argument("ids", type=int, nargs="+", metavar="JOB_ID")
    purge = command("purge", "delete jobs in a state")
    purge.add_argument("state", choices=PURGEABLE_STATES)
    purge.add_argument("--queue", help="only jobs of this queue")
    purge.add_argument(
        "--older-than", type=float, metavar="SECONDS", help="only jobs finished (or enqueued) this long ago"
    )
    purge.add_argument(
        "--yes", action="store_true", help=f"needed to delete jobs still to run ({', '.join(LIVE_STATES)})"
    )
    arch = command("archive", "the partitioned archive of succeeded jobs: enable, disable or status (docs/scaling.md)")
    arch.add_argument("action", choices=["enable", "disable", "status"])
    arch.add_argument(
        "--partition",
        type=_positive_int,
        default=3600,
        metavar="SECONDS",
        help="enable: the time each partition covers, at least 60 (default: 3600); keep it below the workers'"
        " --keep-succeeded, which a partition outlives by up to this much",
    )
    command("workers", "the live workers: host, pid, queues, running jobs, last heartbeat")
    command("queues", "each queue: jobs per state, and whether it is paused")
    for name, help in (
        ("pause", "stop workers claiming from a queue (running jobs finish)"),
        ("resume", "let workers claim from a paused queue again"),
    ):
        command(name, help).add_argument("queue", metavar="QUEUE")
    command("limits", "the rate and concurrency limits the workers declared, with their jobs")
    command("top", "a live view of queues and workers, refreshed every second until Ctrl-C")
    metrics = command("metrics", "serve the queue's health as Prometheus metrics (one scraper per cluster)")
    metrics.add_argument("--port", type=int, default=9400, help="the port of /metrics (default: 9400)")
    metrics.add_argument("--host", default="0.0.0.0", help="the address to listen on (default: 0.0.0.0)")
    dash = command("dashboard", 'serve the web dashboard (pip install "currant[dashboard]")')
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    dash.add_argument("--port", type=_positive_int, default=8080, help="port to bind (default: 8080)")
    dash.add_argument("--read-only", action="store_true", help="hide and refuse every action (retry, cancel)")
    dash.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback address without CURRANT_DASHBOARD_USER/PASSWORD"
    )
    emb = command("embedded", "the embedded PostgreSQL used when no DSN is given")
    emb.add_argument("action", choices=["status", "path", "stop", "destroy"])
    emb.add_argument("--yes", action="store_true", help="needed by destroy, which deletes every job it holds")
    return parser


def run(args: argparse.Namespace, out: TextIO) -> int:
    as_json = getattr(args, "json", False)

    def emit(data: Any, text: str) -> None:
        print(console.to_json(data) if as_json else text, file=out)

    if args.command == "embedded":
        return _embedded(args, emit)
    app = App(args.dsn, schema=args.schema, auto_migrate=False, connect_timeout=args.connect_timeout)
    try:
        if args.command == "top":
            return _top(app, out)
        if args.command == "metrics":
            from . import metrics

            print(f"serving the queue's metrics on http://{args.host}:{args.port}/metrics (Ctrl-C to stop)", file=out)
            out.flush()
            try:
                metrics.serve(app, args.port, args.host)
            except KeyboardInterrupt:
                pass
            return 0
        if args.command == "dashboard":
            return _dashboard(app, args)
        return _command(app, args, emit)
    finally:
        app.close()


def _command(app: App, args: argparse.Namespace, emit: Callable[[Any, str], None]) -> int:
    name = args.command
    if name == "migrate":
        applied = app.migrate()
        emit({"applied": applied}, f"applied migrations: {', '.join(map(str, applied))}" if applied else "up to date")
    elif name == "stats":
        stats = app.stats()
        rows = [
            {"queue": queue, **entry["states"], "oldest_ready_s": entry["oldest_queued_age"]}
            for queue, entry in stats["queues"].items()
        ]
        emit(stats, console.table(rows, ["queue", *STATES, "oldest_ready_s"]))
    elif name in ("failed", "list"):
        state = "failed" if name == "failed" else args.state
        jobs = app.list_jobs(state, queue=args.queue, task=args.task, limit=args.limit)
        emit(jobs, console.table(jobs, console.list_columns(state)))
    elif name == "show":
        job = app.get_job(args.id)
        if job is None:
            return _fail(f"job {args.id} not found")
        emit(job, console.job_detail(job))
    elif name == "retry":
        results = [_retry(app, job_id) for job_id in args.ids]
        emit(results, console.table(results, ["id", "outcome"]))
        return 0 if all(r["outcome"] == "retried" for r in results) else 1
    elif name == "cancel":
        results = [{"id": job_id, "outcome": app.cancel(job_id).replace("_", " ")} for job_id in args.ids]
        emit(results, console.table(results, ["id", "outcome"]))
        return 1 if any(r["outcome"] == "not found" for r in results) else 0
    elif name == "purge":
        if args.state in LIVE_STATES and not args.yes:
            return _fail(f"{args.state} jobs have not run yet; purging deletes them for good (add --yes to do it)")
        deleted = app.purge(args.state, queue=args.queue, older_than=args.older_than)
        emit({"deleted": deleted}, f"deleted {deleted} {args.state} jobs")
    elif name == "queues":
        stats, paused = app.stats(), app.paused_queues()
        rows = [
            {"queue": queue, "paused": queue in paused, **stats["queues"].get(queue, {"states": {}})["states"]}
            for queue in sorted({*stats["queues"], *paused})
        ]
        emit(rows, console.table(rows, ["queue", "paused", *STATES]))
    elif name in ("pause", "resume"):
        changed = app.pause(args.queue) if name == "pause" else app.resume(args.queue)
        state = "paused" if name == "pause" else "running"
        already = {"paused": "was paused already", "running": "was not paused"}[state]
        emit(
            {"queue": args.queue, "state": state, "changed": changed}, f"{args.queue}: {state if changed else already}"
        )
    elif name == "limits":
        rows = app.limits()
        emit(rows, console.table(rows, ["task", "per_second", "burst", "max_running", "queued", "running", "keys"]))
    elif name == "archive":
        return _archive(app, args, emit)
    elif name == "workers":
        workers = app.workers()
        emit(
            workers,
            console.table(
                workers, ["id", "hostname", "pid", "queues", "concurrency", "running", "started_at", "last_seen"]
            ),
        )
    return 0


def _archive(app: App, args: argparse.Namespace, emit: Callable[[Any, str], None]) -> int:
    if args.action == "enable":
        if args.partition < archive.MIN_PARTITION_SECONDS:
            return _fail(f"--partition must be at least {archive.MIN_PARTITION_SECONDS} seconds, got {args.partition}")
        if app.run_plan(current_version(app.schema)) is None:  # a mistyped --schema is not a new queue
            return _fail(_not_installed(app.schema))
        app.migrate()  # the archive's tables come with migration 0009
        created = app.run_plan(archive.enable(app.sql, args.partition), write=True)
        emit(
            {"enabled": True, "partition_seconds": args.partition, "created": created},
            f"archive on: partitions of {args.partition} s ({created} created now); running workers start moving"
            f" succeeded jobs there within {archive.ROTATE_EVERY_BEATS} heartbeats (a minute by default)",
        )
    elif args.action == "disable":
        was_on = app.run_plan(archive.disable(app.sql), write=True)
        emit(
            {"enabled": False, "changed": was_on},
            "archive off: workers keep succeeded jobs in place again within"
            f" {archive.ROTATE_EVERY_BEATS} heartbeats; what the archive holds ages out"
            if was_on
            else "the archive was not on",
        )
    else:
        info = app.run_plan(archive.status(app.sql))
        head = f"archive {'on' if info['enabled'] else 'off'}" + (
            f", partitions of {info['partition_seconds']} s since {info['enabled_at']:%Y-%m-%d %H:%M:%S}"
            if info["enabled"]
            else ""
        )
        emit(info, head + "\n" + console.table(info["partitions"], ["partition", "bounds", "rows_estimate", "bytes"]))
    return 0


def _retry(app: App, job_id: int) -> dict[str, Any]:
    if app.retry(job_id):
        return {"id": job_id, "outcome": "retried"}
    job = app.get_job(job_id)
    if job is None:
        return {"id": job_id, "outcome": "not found"}
    return {"id": job_id, "outcome": f"not retried: it is {job.state} (only failed or cancelled jobs are)"}


def _top(app: App, out: TextIO) -> int:
    # Ctrl-C sets a flag instead of raising: a KeyboardInterrupt landing inside
    # a query could leave the pool with a connection it then waits for at exit.
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    try:
        before, then = app.stats(), time.monotonic()
        while not stop.wait(TOP_INTERVAL):
            stats, now = app.stats(), time.monotonic()
            screen = console.top_screen(
                stats, app.workers(), console.rates_between(before, stats, now - then), datetime.now(timezone.utc)
            )
            print("\x1b[H\x1b[2J" + screen if out.isatty() else screen + "\n", file=out, flush=True)
            before, then = stats, now
        return 0
    finally:
        signal.signal(signal.SIGINT, previous)


def _dashboard(app: App, args: argparse.Namespace) -> int:
    try:
        from .dashboard.serve import serve
    except ImportError as exc:
        return _fail(f'the dashboard needs its extra: pip install "currant[dashboard]" ({exc})')
    return serve(app, host=args.host, port=args.port, read_only=args.read_only, insecure=args.insecure)


def _embedded(args: argparse.Namespace, emit: Callable[[Any, str], None]) -> int:
    path = embedded.data_dir()
    if args.action == "path":
        emit({"path": str(path)}, str(path))
    elif args.action == "status":
        info = embedded.status(path)
        state = f"running (pid {info['pid']})" if info["running"] else "not running"
        emit(info, f"{path}: {state}, {info['bytes'] / 2**20:.1f} MiB" if info["exists"] else f"{path}: none")
    elif args.action == "stop":
        stopped = embedded.stop(path)
        emit({"stopped": stopped}, "stopped" if stopped else "not running")
    elif args.action == "destroy":
        if not args.yes:
            return _fail(f"this deletes {path} and every job in it (add --yes to do it)")
        removed = embedded.destroy(path)
        emit({"removed": removed}, f"removed {path}" if removed else f"nothing at {path}")
    return 0


def _not_installed(schema: str) -> str:
    return (
        f"error: Currant is not installed in schema {schema!r} of this database"
        " (python -m currant migrate installs it; --schema names another)"
    )


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args, sys.stdout)
    except (CurrantError, ValueError, TimeoutError) as exc:
        return _fail(f"error: {exc}")
    except psycopg.errors.UndefinedTable:
        return _fail(_not_installed(args.schema or os.environ.get("CURRANT_SCHEMA") or "currant"))
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        first_line = str(exc).strip().split("\n", 1)[0]
        return _fail(f"error: {type(exc).__name__}: {first_line}")
