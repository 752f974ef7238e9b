"""Retention under churn, the default layout or the partitioned archive (issue 17, part 4).

    PYTHONPATH=. python benchmarks/churn.py --dsn DSN [--layout default|archive] [--partition 60]
        [--rate 5000] [--backlog 1000000] [--minutes 30] [--keep-succeeded 60] [--json PATH]
    PYTHONPATH=. python benchmarks/churn.py --summarize RUN.json [RUN.json ...]   # a comparison table

A fresh database; ``--backlog`` jobs sit queued in a queue no worker serves
(a big backlog the table and its indexes carry all along); one worker serves
``default`` with ``--keep-succeeded`` seconds of retention, so once it has
filled, retention deletes as many finished jobs a second as arrive. A
producer enqueues ``--rate`` jobs a second into ``default`` (``enqueue_many``
of rate/10 every 100 ms, on a fixed schedule). Every 30 s: the jobs table's
size (heap, indexes, TOAST), live and dead tuples, autovacuum runs so far,
finished jobs kept, and the wait (``started_at - enqueued_at``, database
clock) p50/p99 of the jobs started in that window.

``--layout archive`` turns the archive on (``currant.archive.enable`` with
``--partition`` seconds) before the worker starts: succeeded jobs move to the
archive's partitions, which the worker drops past retention. Its samples add
the archive's size, partitions and dead tuples. To compare the layouts in
the same run, start one process of each at once (BENCHMARKS.md has the
command): each has its own database, producer and worker.

When the server runs with ``autovacuum = off`` (the benchmark machine does;
it is a server-wide setting this script does not change), a thread stands in
for it: every 5 s, once dead tuples pass the threshold the migrations set on
the jobs table (50 + 1 % of live tuples), it runs ``VACUUM`` on the table, and
the samples count those runs and their time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

import currant
from benchmarks.e2e import fresh_target, machine_info, worker_env
from currant import archive

REPO = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(f"[churn {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def vacuum_like_autovacuum(dsn: str, schema: str, stop: threading.Event, done: list[float]) -> None:
    """Stand-in for autovacuum, with the jobs table's own threshold."""
    table = f'"{schema}".jobs'
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.wait(5):  # autovacuum's naptime, shortened for one table
            row = conn.execute(
                "SELECT n_dead_tup, n_live_tup FROM pg_stat_user_tables WHERE relid = %s::regclass", (table,)
            ).fetchone()
            if row and row[0] > 50 + 0.01 * row[1]:
                started = time.monotonic()
                conn.execute(f"VACUUM {table}")
                done.append(time.monotonic() - started)


def produce(app: currant.App, rate: int, stop: threading.Event, sent: list[int]) -> None:
    """rate/10 jobs every 100 ms, on a fixed schedule (late ticks are not made up)."""
    batch = max(1, rate // 10)
    t0 = time.monotonic()
    tick = 0
    while not stop.is_set():
        app.enqueue_many("bench.noop", [()] * batch)
        sent[0] += batch
        tick += 1
        delay = t0 + tick / 10 - time.monotonic()
        if delay > 0:
            stop.wait(delay)  # the offered load's schedule
        else:
            tick = int((time.monotonic() - t0) * 10)  # fell behind: skip, do not burst


SAMPLE = """
SELECT pg_relation_size(c.oid), pg_indexes_size(c.oid), coalesce(pg_total_relation_size(c.reltoastrelid), 0),
       s.n_live_tup, s.n_dead_tup, s.autovacuum_count, s.autoanalyze_count
FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = %s::regclass
"""


ARCHIVE_SAMPLE = """
SELECT count(*), coalesce(sum(pg_total_relation_size(i.inhrelid)), 0), coalesce(sum(s.n_dead_tup), 0)
FROM pg_inherits i LEFT JOIN pg_stat_user_tables s ON s.relid = i.inhrelid
WHERE i.inhparent = %s::regclass
"""


def sample(conn: psycopg.Connection[Any], schema: str, since: Any) -> dict[str, Any]:
    row = conn.execute(SAMPLE, (f'"{schema}".jobs',)).fetchone()
    assert row is not None
    heap, indexes, toast, live, dead, vacuums, analyzes = row
    # jobs_all: live and archived jobs (the default layout's archive is empty).
    waits = conn.execute(
        f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY w), percentile_cont(0.99) WITHIN GROUP (ORDER BY w),"
        f" count(*) FROM (SELECT extract(epoch FROM started_at - enqueued_at) * 1000 AS w"
        f' FROM "{schema}".jobs_all WHERE queue = %s AND started_at >= %s) AS s',
        ("default", since),
    ).fetchone()
    kept = conn.execute(f"SELECT count(*) FROM \"{schema}\".jobs_all WHERE state = 'succeeded'").fetchone()
    partitions = conn.execute(ARCHIVE_SAMPLE, (f'"{schema}".archive',)).fetchone()
    queued = conn.execute(
        f"SELECT count(*) FROM \"{schema}\".jobs WHERE state = 'queued' AND queue = 'default'"
    ).fetchone()
    assert waits is not None and kept is not None and queued is not None and partitions is not None
    return {
        "archive_partitions": partitions[0],
        "archive_mb": partitions[1] / 2**20,
        "archive_dead": partitions[2],
        "heap_mb": heap / 2**20,
        "indexes_mb": indexes / 2**20,
        "toast_mb": toast / 2**20,
        "live": live,
        "dead": dead,
        "autovacuums": vacuums,
        "autoanalyzes": analyzes,
        "succeeded_kept": kept[0],
        "default_queued": queued[0],
        "wait_p50_ms": waits[0],
        "wait_p99_ms": waits[1],
        "started": waits[2],
    }


def summarize(paths: list[Path]) -> str:
    """A Markdown table comparing runs' JSON files, one column per run."""

    def spread(values: list[float], digits: int = 0) -> str:
        return f"{min(values):,.{digits}f}–{max(values):,.{digits}f}"

    columns: dict[str, list[str]] = {}
    for path in paths:
        run = json.loads(path.read_text())
        samples = run["samples"]
        settled = [s for s in samples if s["t_s"] >= 120]  # past the first fill of the retention window
        tenth = max(1, len(samples) // 3)
        column = [
            f"{samples[-1]['offered']:,} offered; {sum(s['started'] for s in samples):,} started",
            spread([s["heap_mb"] for s in settled]),
            spread([s["indexes_mb"] for s in settled]),
            spread([s.get("archive_mb", 0.0) for s in settled]),
            f"{statistics.median(s['dead'] for s in samples):,.0f} / {max(s['dead'] for s in samples):,.0f}",
            f"{samples[-1]['vacuums_emulated']} runs, {samples[-1]['vacuum_s']:.0f} s",
            spread([s["succeeded_kept"] for s in settled]),
            f"{statistics.median(s['wait_p50_ms'] for s in samples):.1f} ({spread([s['wait_p50_ms'] for s in samples], 1)})",
            f"{statistics.median(s['wait_p99_ms'] for s in samples):.0f} ({spread([s['wait_p99_ms'] for s in samples])})",
            f"{statistics.median(s['wait_p99_ms'] for s in samples[:tenth]):.0f} vs"
            f" {statistics.median(s['wait_p99_ms'] for s in samples[-tenth:]):.0f}",
        ]
        columns[run["args"].get("layout", "default")] = column
    rows = [
        "jobs through",
        "jobs table heap, MB (from minute 2)",
        "its indexes, MB (from minute 2)",
        "archive, MB, all partitions (from minute 2)",
        "dead tuples in jobs at a sample, median / max",
        "VACUUM of jobs",
        "succeeded jobs kept (from minute 2)",
        "wait p50 ms, median of windows (range)",
        "wait p99 ms, median of windows (range)",
        "wait p99 ms, first third vs last third",
    ]
    lines = ["| over the run | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {row} | " + " | ".join(column[i] for column in columns.values()) + " |" for i, row in enumerate(rows)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("CURRANT_DSN"), help="default: $CURRANT_DSN")
    parser.add_argument("--layout", choices=["default", "archive"], default="default")
    parser.add_argument("--partition", type=int, default=60, help="archive: seconds per partition (default: 60)")
    parser.add_argument("--rate", type=int, default=5000, help="jobs/s offered (default: 5000)")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="jobs queued all along (default: 1000000)")
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the churn (default: 30)")
    parser.add_argument("--keep-succeeded", type=float, default=60.0, help="retention in seconds (default: 60)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--summarize", type=Path, nargs="+", metavar="JSON", help="compare earlier runs' files; no run")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if not args.dsn:
        parser.error("--dsn (or $CURRANT_DSN) is needed for a run")
    # SIGTERM (a background run has SIGINT ignored): leave through the
    # finally blocks, which stop the worker and drop the database.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    samples: list[dict[str, Any]] = []
    with fresh_target(args.dsn, 0) as (dsn, schema), psycopg.connect(dsn, autocommit=True) as conn:
        app = currant.App(dsn, schema=schema)
        app.migrate()
        if args.layout == "archive":
            app.run_plan(archive.enable(app.sql, args.partition), write=True)
        log(f"enqueueing the backlog of {args.backlog:,}")
        for start in range(0, args.backlog, 100_000):
            app.enqueue_many("bench.noop", [()] * min(100_000, args.backlog - start), queue="backlog")
        command = [sys.executable, "-m", "currant.worker", "benchmarks.bench_app:app", "--queues", "default"]
        command += ["--keep-succeeded", str(args.keep_succeeded)]
        worker = subprocess.Popen(command, env=worker_env(dsn, schema), cwd=REPO, stderr=subprocess.PIPE, text=True)
        stop, sent = threading.Event(), [0]
        producer = threading.Thread(target=produce, args=(app, args.rate, stop, sent), daemon=True)
        vacuums: list[float] = []
        (autovacuum,) = conn.execute("SHOW autovacuum").fetchone()  # type: ignore[misc]
        if autovacuum == "off":
            log("autovacuum is off on this server: a thread runs VACUUM at the table's own threshold instead")
            args.vacuum = "emulated (autovacuum off on the server)"
            threading.Thread(target=vacuum_like_autovacuum, args=(dsn, schema, stop, vacuums), daemon=True).start()
        else:
            args.vacuum = "autovacuum"
        started = time.monotonic()
        producer.start()
        try:
            (since,) = conn.execute("SELECT now()").fetchone()  # type: ignore[misc]
            while time.monotonic() - started < args.minutes * 60:
                stop.wait(30)  # the sampling period
                (now,) = conn.execute("SELECT now()").fetchone()  # type: ignore[misc]
                row = {"t_s": round(time.monotonic() - started), "offered": sent[0], **sample(conn, schema, since)}
                row.update(vacuums_emulated=len(vacuums), vacuum_s=round(sum(vacuums), 1))
                since = now
                samples.append(row)
                log(json.dumps(row, default=float))
        finally:
            stop.set()
            producer.join(30)
            worker.send_signal(signal.SIGTERM)
            _, stderr = worker.communicate(timeout=120)
            app.close()
        log(stderr.strip().splitlines()[-1] if stderr.strip() else "worker said nothing")
    if args.json:
        info = {"machine": machine_info(args.dsn), "args": {**vars(args), "json": str(args.json)}}
        args.json.write_text(json.dumps({**info, "samples": samples}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
