"""Issue 16, target 2: what the shape of ``jobs`` costs a bulk COPY, in the server's CPU.

    python benchmarks/copy_shape.py --dsn DSN [--jobs 1000000] [--rounds 5] [--json out.json]

The same binary COPY stream that ``enqueue_many`` sends (``(i, "x" * 32)``
arguments, rows built by ``currant.enqueue._copy_chunks``, ids drawn by the
table) goes into copies of ``jobs`` changed one way at a time; the floor's
minimal table (``floor.py``) gets its own rows. Every round, in alternating
order, each variant gets a new table after a CHECKPOINT. Reported per
variant, medians: wall clock of the COPY, the backend's CPU (user + system,
from ``/proc/<pid>/stat``: the server, not the client, is what bounds a bulk
enqueue), WAL bytes, and heap size.

Variants (``jobs`` is copied with ``LIKE ... INCLUDING ALL`` and the
fillfactor of migration 0001):

* ``jobs``: as migrated;
* ``-partial``: without the nine partial indexes a queued job of priority 0
  is not in (``profile_db.SKIPPED_INDEXES``): each still evaluates its
  predicate for every row;
* ``-checks``: without the three CHECK constraints;
* ``ff100``: fillfactor 100 instead of 90;
* ``lean``: all three changes.

Linux only (``/proc``); the server must be on this host.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import currant
from benchmarks.floor import create_floor_table
from benchmarks.profile_db import SKIPPED_INDEXES
from benchmarks.scratch_db import fresh_database
from currant import codec
from currant.enqueue import _copy_chunks

COLUMNS = "(queue, task, payload, priority, max_attempts, run_at, state, unique_key)"
VARIANTS = ("floor", "jobs", "-partial", "-checks", "ff100", "lean")


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_table(conn: psycopg.Connection[Any], variant: str) -> None:
    conn.execute("DROP TABLE IF EXISTS shape CASCADE")
    fillfactor = 100 if variant in ("ff100", "lean") else 90
    conn.execute(f"CREATE TABLE shape (LIKE currant.jobs INCLUDING ALL) WITH (fillfactor = {fillfactor})")
    if variant in ("-partial", "lean"):
        # LIKE names the copies after their columns: find them by their source's definition.
        skipped = [
            row[0]
            for row in conn.execute(
                "SELECT copy.indexrelid::regclass::text FROM pg_index copy JOIN pg_index source"
                " ON source.indrelid = 'currant.jobs'::regclass AND copy.indrelid = 'shape'::regclass"
                " AND pg_get_expr(copy.indpred, copy.indrelid) = pg_get_expr(source.indpred, source.indrelid)"
                " AND copy.indkey::text = source.indkey::text"
                " WHERE source.indexrelid::regclass::text = ANY(%s)",
                ([f"currant.{name}" for name in SKIPPED_INDEXES],),
            )
        ]
        assert len(skipped) == len(SKIPPED_INDEXES), skipped
        for name in skipped:
            conn.execute(f"DROP INDEX {name}")
    if variant in ("-checks", "lean"):
        checks = conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'shape'::regclass AND contype = 'c'")
        for (name,) in checks.fetchall():
            conn.execute(f'ALTER TABLE shape DROP CONSTRAINT "{name}"')


def one_copy(target: str, variant: str, payloads: list[bytes], chunks: list[bytes]) -> dict[str, float]:
    with psycopg.connect(target, autocommit=True) as conn:
        if variant == "floor":
            conn.execute("DROP SCHEMA IF EXISTS floor CASCADE")
            create_floor_table(conn, "floor")
            rows = [("default", "bench.small_args", payload) for payload in payloads]
        else:
            make_table(conn, variant)
        conn.execute("CHECKPOINT")
        pid = conn.info.backend_pid
        wal_before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        cpu_before, started = backend_cpu(pid), time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            if variant == "floor":
                with cur.copy("COPY floor.t (queue, task, payload) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["text", "text", "bytea"])
                    for row in rows:
                        copy.write_row(row)
            else:
                with cur.copy(f"COPY shape {COLUMNS} FROM STDIN (FORMAT BINARY)") as copy:
                    for chunk in chunks:
                        copy.write(chunk)
        wall, cpu = time.perf_counter() - started, backend_cpu(pid) - cpu_before
        wal = conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", (str(wal_before),)).fetchone()[0]  # type: ignore[index]
        table = "floor.t" if variant == "floor" else "shape"
        heap = conn.execute("SELECT pg_table_size(%s)", (table,)).fetchone()[0]  # type: ignore[index]
    return {"wall": wall, "cpu": cpu, "wal_mb": int(wal) / 1e6, "heap_mb": heap / 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    target = fresh_database(args.dsn, "bench_copy_shape")
    with currant.App(target, schema="currant") as app:
        app.migrate()
    packed = codec.pack_plain_args([(i, "x" * 32) for i in range(args.jobs)], 1 << 20, b"")
    payloads = [payload for payload in packed if payload is not None]  # plain tuples: every one packs
    assert len(payloads) == args.jobs
    plain = ("default", "bench.small_args", 0, None, 0, "queued")
    chunks = list(_copy_chunks(payloads, plain, {}))
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for round_ in range(args.rounds):
        for variant in VARIANTS if round_ % 2 == 0 else reversed(VARIANTS):
            runs[variant].append(one_copy(target, variant, payloads, chunks))
            print(f"round {round_ + 1}/{args.rounds} {variant}: {runs[variant][-1]}", file=sys.stderr)
    medians = {v: {k: statistics.median(r[k] for r in runs[v]) for k in runs[v][0]} for v in VARIANTS}
    floor_cpu = medians["floor"]["cpu"]
    print(f"{args.jobs:,} rows, medians of {args.rounds}")
    print("| variant | wall, s | backend CPU, s | floor's CPU / this | WAL, MB | heap, MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for variant, m in medians.items():
        print(
            f"| {variant} | {m['wall']:.2f} | {m['cpu']:.2f} | {floor_cpu / m['cpu']:.2f}x"
            f" | {m['wal_mb']:.0f} | {m['heap_mb']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "runs": runs, "medians": medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
