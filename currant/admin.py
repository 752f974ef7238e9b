"""``python -m currant``: the admin CLI (migrate, stats, failed, retry, cancel, purge).

Human-readable tables by default, ``--json`` for scripts. It needs no app
module: only the DSN (``--dsn`` or ``$CURRANT_DSN``, else the embedded server)
and the schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

from .app import App
from .job import STATES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m currant", description="Administer a Currant queue.")
    parser.add_argument("--dsn", help="PostgreSQL connection string (default: $CURRANT_DSN, else the embedded server)")
    parser.add_argument("--schema", help="schema of Currant's tables (default: $CURRANT_SCHEMA or 'currant')")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("migrate", help="create or upgrade the schema")
    commands.add_parser("stats", help="jobs per queue and state, and the oldest ready job's age")
    listing = commands.add_parser("failed", help="list the newest failed jobs")
    listing.add_argument("--queue")
    listing.add_argument("--limit", type=int, default=50)
    jobs = commands.add_parser("list", help="list the newest jobs in a state")
    jobs.add_argument("state", choices=STATES)
    jobs.add_argument("--queue")
    jobs.add_argument("--limit", type=int, default=50)
    retry = commands.add_parser("retry", help="queue failed or cancelled jobs again")
    retry.add_argument("ids", type=int, nargs="+", metavar="JOB_ID")
    cancel = commands.add_parser("cancel", help="cancel jobs (running ones are asked to stop)")
    cancel.add_argument("ids", type=int, nargs="+", metavar="JOB_ID")
    purge = commands.add_parser("purge", help="delete jobs in a state")
    purge.add_argument("state", choices=["succeeded", "failed", "cancelled", "queued", "scheduled", "retrying"])
    purge.add_argument("--queue")
    purge.add_argument("--older-than", type=float, metavar="SECONDS", help="only jobs finished (or enqueued) this long ago")
    show = commands.add_parser("show", help="show one job")
    show.add_argument("id", type=int, metavar="JOB_ID")
    return parser


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(widths[i]) for i, column in enumerate(columns))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(value.ljust(widths[i]) for i, value in enumerate(line)) for line in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.1f}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return str(value)


def run(args: argparse.Namespace, out: Any) -> int:
    app = App(args.dsn, schema=args.schema, auto_migrate=False)
    as_json = args.json
    status = 0

    def emit(data: Any, rows: Sequence[dict[str, Any]] | None = None, columns: Sequence[str] = ()) -> None:
        if as_json:
            print(json.dumps(data, default=_json_default, indent=2), file=out)
        elif rows is not None:
            print(_table(rows, columns), file=out)
        else:
            print(data, file=out)

    try:
        if args.command == "migrate":
            applied = app.migrate()
            emit({"applied": applied}, [{"applied": ", ".join(map(str, applied)) or "nothing: up to date"}], ["applied"])
        elif args.command == "stats":
            stats = app.stats()
            rows = [
                {"queue": queue, **entry["states"], "oldest_queued_s": entry["oldest_queued_age"]}
                for queue, entry in stats["queues"].items()
            ]
            emit(stats, rows, ["queue", *STATES, "oldest_queued_s"])
        elif args.command in ("failed", "list"):
            state = "failed" if args.command == "failed" else args.state
            jobs = app.list_jobs(state, queue=args.queue, limit=args.limit)
            emit(jobs, jobs, ["id", "task", "queue", "state", "attempts", "finished_at", "last_error"])
        elif args.command == "retry":
            results = [{"id": job_id, "retried": app.retry(job_id)} for job_id in args.ids]
            status = 0 if all(r["retried"] for r in results) else 1
            emit(results, results, ["id", "retried"])
        elif args.command == "cancel":
            results = [{"id": job_id, "outcome": app.cancel(job_id)} for job_id in args.ids]
            emit(results, results, ["id", "outcome"])
        elif args.command == "purge":
            deleted = app.purge(args.state, queue=args.queue, older_than=args.older_than)
            emit({"deleted": deleted}, [{"deleted": deleted}], ["deleted"])
        elif args.command == "show":
            job = app.get_job(args.id)
            if job is None:
                print(f"python -m currant: job {args.id} not found", file=sys.stderr)
                return 1
            data = {name: getattr(job, name) for name in job.__dataclass_fields__}
            emit(data, [{"field": k, "value": v} for k, v in data.items()], ["field", "value"])
    finally:
        app.close()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args, sys.stdout)
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        print(f"python -m currant: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
