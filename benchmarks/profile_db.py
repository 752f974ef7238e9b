"""Where PostgreSQL's time goes in a drain and in a bulk enqueue: two profiles.

``wal``: drains N queued no-op jobs with one ``--burst`` worker (default
options) right after a CHECKPOINT, then breaks the WAL written during the
drain down by record type with ``pg_waldump --stats=record`` (records and
bytes per job, full-page images apart). It reads the server's ``pg_wal``
directory, so it needs a local server and the right to read its files.
``--fillfactor`` reruns it with the jobs table at another fillfactor.

``copy``: the server's side of a bulk enqueue alone. The same N rows are
COPYed (binary, prebuilt streams, nothing encoded in Python while timing)
into the floor's table (``benchmarks/floor.py``: id by ``nextval``, one
partial index) and into Currant's ``jobs`` (ids sent, as ``enqueue_many``
does), each into a fresh table after a CHECKPOINT; then into ``jobs`` with
one change to its shape at a time (what each index, CHECK and default
costs); then the id reservation ``enqueue_many`` runs first
(``reserve_ids``) is timed on its own.

    python benchmarks/profile_db.py wal --dsn postgresql://postgres@127.0.0.1:5432/postgres
    python benchmarks/profile_db.py copy --dsn ... --runs 5

Both use a throwaway schema in the given database and drop it at the end.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import currant
from benchmarks.e2e import REPO, log, worker_cmd, worker_env
from benchmarks.floor import NOOP_PAYLOAD, create_floor_table
from currant import schema as currant_schema
from currant.plans import run_plan
from currant.sql import queries

SCHEMA = "bench_profile"
FLOOR_SCHEMA = "bench_profile_floor"
FLOOR_COLUMNS = "(queue, task, payload, state, attempts)"
# A record type's row of "pg_waldump --stats=record": type, records, record
# bytes, FPI bytes, each count followed by its share, e.g. "( 25.27)".
_WALDUMP_ROW = re.compile(r"^(\S+/\S+)\s+(\d+)\s+\([\s\d.]*\)\s+(\d+)\s+\([\s\d.]*\)\s+(\d+)")
JOBS_COLUMNS = "(id, queue, task, payload, priority, max_attempts, run_at, state, unique_key)"
JOBS_COLUMNS_WITH_ENQUEUED_AT = JOBS_COLUMNS[:-1] + ", enqueued_at)"
# The shape migration 0001 gave the table: priority in the claim index, name
# CHECKs that count characters (0002 changed both; kept to show the effect).
SHAPE_OF_0001 = [
    f"DROP INDEX {SCHEMA}.jobs_claim_idx",
    f"DROP INDEX {SCHEMA}.jobs_claim_priority_idx",
    f"CREATE INDEX jobs_claim_idx ON {SCHEMA}.jobs (queue, priority DESC, id) WHERE state = 'queued'",
    f"ALTER TABLE {SCHEMA}.jobs DROP CONSTRAINT jobs_queue_name, DROP CONSTRAINT jobs_task_name,"
    " ADD CONSTRAINT jobs_queue_name CHECK (length(queue) BETWEEN 1 AND 200),"
    " ADD CONSTRAINT jobs_task_name CHECK (length(task) BETWEEN 1 AND 200)",
]
# The partial indexes a queued job of priority 0 is not in: each costs its
# predicate's evaluation per row inserted all the same.
SKIPPED_INDEXES = (
    "jobs_claim_priority_idx",
    "jobs_suspect_idx",
    "jobs_due_idx",
    "jobs_unique_key_idx",
    "jobs_finished_idx",
    "jobs_group_idx",
    "jobs_limited_idx",
    "jobs_limited_running_idx",
    "jobs_waiting_idx",
)
# What the jobs table's shape costs a COPY: one change at a time, on a fresh
# table, same rows. (DDL run after the migration, COPY column list.)
JOBS_VARIANTS: dict[str, tuple[list[str], str]] = {
    "jobs, COPY (ids sent)": ([], JOBS_COLUMNS),
    "  as migration 0001 left it": (SHAPE_OF_0001, JOBS_COLUMNS),
    "  without jobs_claim_idx": ([f"DROP INDEX {SCHEMA}.jobs_claim_idx"], JOBS_COLUMNS),
    "  without the 3 CHECKs": (
        [
            f"ALTER TABLE {SCHEMA}.jobs DROP CONSTRAINT jobs_queue_name, DROP CONSTRAINT jobs_task_name,"
            " DROP CONSTRAINT jobs_max_attempts",
        ],
        JOBS_COLUMNS,
    ),
    "  without the 9 partial indexes it skips": (
        [f"DROP INDEX {SCHEMA}.{name}" for name in SKIPPED_INDEXES],
        JOBS_COLUMNS,
    ),
    '  queue, task COLLATE "C"': (
        [
            f"DROP VIEW {SCHEMA}.jobs_all",  # (migration 0009) it would keep the columns' type
            f'ALTER TABLE {SCHEMA}.jobs ALTER queue TYPE text COLLATE "C", ALTER task TYPE text COLLATE "C"',
        ],
        JOBS_COLUMNS,
    ),
    "  enqueued_at sent, not clock()": ([], JOBS_COLUMNS_WITH_ENQUEUED_AT),
    "  ids by nextval (not sent)": ([], JOBS_COLUMNS.replace("(id, ", "(")),
}


def fresh_jobs_table(conn: psycopg.Connection, fillfactor: int | None = None) -> None:
    conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    with conn.transaction():
        run_plan(conn, currant_schema.migrate(SCHEMA))
    if fillfactor is not None:
        conn.execute(f"ALTER TABLE {SCHEMA}.jobs SET (fillfactor = {int(fillfactor)})")


def find_waldump() -> str:
    found = shutil.which("pg_waldump") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_waldump"))), None)
    if found is None:
        raise SystemExit("pg_waldump not found (PostgreSQL's server binaries); pass --waldump")
    return found


def profile_wal(args: argparse.Namespace) -> None:
    waldump = args.waldump or find_waldump()
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        waldir = os.path.join(conn.execute("SHOW data_directory").fetchone()[0], "pg_wal")  # type: ignore[index]
        fresh_jobs_table(conn, args.fillfactor)
    app = currant.App(args.dsn, schema=SCHEMA)
    noop = app.task(name="bench.noop")(lambda: None)
    log(f"enqueue {args.jobs:,} no-op jobs")
    noop.enqueue_many([()] * args.jobs)
    app.close()
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        start = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    log("drain with one --burst worker")
    began = time.perf_counter()
    subprocess.run(
        worker_cmd("--burst", "--log-level", "WARNING"), env=worker_env(args.dsn, SCHEMA), cwd=REPO, check=True
    )
    seconds = time.perf_counter() - began
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        end = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        size = conn.execute(f"SELECT pg_total_relation_size('{SCHEMA}.jobs')").fetchone()[0]  # type: ignore[index]
        conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    stats = subprocess.run(
        [waldump, "-p", waldir, "-s", str(start), "-e", str(end), "--stats=record"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    n = args.jobs
    print(
        f"drain of {n:,} jobs in {seconds:.2f} s (with start-up); jobs table + indexes after: {size / 2**20:.0f} MiB;"
        f" fillfactor {args.fillfactor or 'as migrated'}"
    )
    print(f"{'record type':<24} {'records/job':>12} {'bytes/job':>10} {'of which FPI':>13}")
    total = [0, 0]
    for line in stats.splitlines():
        match = _WALDUMP_ROW.match(line)
        if match is None:
            continue
        kind, records, record_bytes, fpi_bytes = match.group(1), *map(int, match.group(2, 3, 4))
        total[0] += record_bytes + fpi_bytes
        total[1] += fpi_bytes
        if records / n >= 0.005:
            print(f"{kind:<24} {records / n:>12.2f} {(record_bytes + fpi_bytes) / n:>10.0f} {fpi_bytes / n:>13.0f}")
    print(f"{'all records':<24} {'':>12} {total[0] / n:>10.0f} {total[1] / n:>13.0f}")


def _copy_out(conn: psycopg.Connection, statement: str) -> bytes:
    data = bytearray()
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for chunk in copy:
            data += chunk
    return bytes(data)


def _timed_copy_in(conn: psycopg.Connection, statement: str, data: bytes) -> float:
    began = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
        for offset in range(0, len(data), 1 << 20):
            copy.write(data[offset : offset + (1 << 20)])
    return time.perf_counter() - began


def profile_copy(args: argparse.Namespace) -> None:
    n = args.jobs
    floor_name, reserve_name = "floor table, COPY (ids by nextval)", "jobs, reserve_ids"
    timings: dict[str, list[float]] = {floor_name: [], **{name: [] for name in JOBS_VARIANTS}, reserve_name: []}
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        # The streams, made by the server itself from identical rows.
        create_floor_table(conn, FLOOR_SCHEMA)
        conn.execute(
            f"INSERT INTO {FLOOR_SCHEMA}.t (queue, task, payload) SELECT 'default', 'bench.noop', %s"
            " FROM generate_series(1, %s)",
            (NOOP_PAYLOAD, n),
        )
        floor_stream = _copy_out(conn, f"COPY {FLOOR_SCHEMA}.t {FLOOR_COLUMNS} TO STDOUT (FORMAT BINARY)")
        fresh_jobs_table(conn)
        conn.execute(
            f"INSERT INTO {SCHEMA}.jobs {JOBS_COLUMNS} SELECT g, 'default', 'bench.noop', %s, 0, NULL,"
            " now(), 'queued', NULL FROM generate_series(1, %s) g",
            (NOOP_PAYLOAD, n),
        )
        jobs_streams = {
            columns: _copy_out(conn, f"COPY {SCHEMA}.jobs {columns} TO STDOUT (FORMAT BINARY)")
            for columns in {columns for _, columns in JOBS_VARIANTS.values()}
        }
        reserve = queries(SCHEMA)["reserve_ids"]
        for run in range(args.runs):
            log(f"run {run + 1}/{args.runs}")
            create_floor_table(conn, FLOOR_SCHEMA)
            conn.execute("CHECKPOINT")
            timings[floor_name].append(
                _timed_copy_in(conn, f"COPY {FLOOR_SCHEMA}.t {FLOOR_COLUMNS} FROM STDIN (FORMAT BINARY)", floor_stream)
            )
            for name, (ddl, columns) in JOBS_VARIANTS.items():
                fresh_jobs_table(conn)
                for statement in ddl:
                    conn.execute(statement)
                conn.execute("CHECKPOINT")
                timings[name].append(
                    _timed_copy_in(
                        conn, f"COPY {SCHEMA}.jobs {columns} FROM STDIN (FORMAT BINARY)", jobs_streams[columns]
                    )
                )
            began = time.perf_counter()
            for start in range(0, n, 50_000):  # as enqueue_many does (client.ENQUEUE_BATCH)
                conn.execute(reserve, {"n": min(50_000, n - start)}).fetchone()
            timings[reserve_name].append(time.perf_counter() - began)
        conn.execute(f"DROP SCHEMA {FLOOR_SCHEMA} CASCADE")
        conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    floor_s = statistics.median(timings[floor_name])
    print(f"{n:,} rows, median of {args.runs} (min-max); rate = rows/s; ratio = floor table's time / this time")
    for name, values in timings.items():
        median = statistics.median(values)
        print(
            f"{name:<38} {median:.3f} s ({min(values):.3f}-{max(values):.3f})  {n / median:>10,.0f}/s"
            f"  {floor_s / median:.2f}x"
        )
    both = statistics.median(timings["jobs, COPY (ids sent)"]) + statistics.median(timings[reserve_name])
    print(f"{'jobs, reserve_ids + COPY':<38} {both:.3f} s  {n / both:>25,.0f}/s  {floor_s / both:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", choices=["wal", "copy"])
    parser.add_argument("--dsn", default=os.environ.get("CURRANT_DSN"), required="CURRANT_DSN" not in os.environ)
    parser.add_argument("--jobs", type=int, default=None, help="default: 100,000 (wal), 200,000 (copy)")
    parser.add_argument("--runs", type=int, default=5, help="copy: repetitions (default 5)")
    parser.add_argument("--fillfactor", type=int, default=None, help="wal: the jobs table's fillfactor")
    parser.add_argument(
        "--waldump", default=None, help="wal: path of pg_waldump (default: found on PATH or under /usr/lib/postgresql)"
    )
    args = parser.parse_args()
    if args.profile == "wal":
        args.jobs = args.jobs or 100_000
        profile_wal(args)
    else:
        args.jobs = args.jobs or 200_000
        profile_copy(args)


if __name__ == "__main__":
    main()
