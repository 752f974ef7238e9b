"""Issue 16, target 2: ``enqueue_many`` against psycopg's binary COPY, interleaved.

    python benchmarks/enqueue_floor.py --dsn DSN [--jobs 100000 --jobs 1000000] [--rounds 3] [--json out.json]

Every job's arguments are ``(i, "x" * 32)``. Per size and round, in
alternating order, each into a fresh database (after a CHECKPOINT, so one
side's writes are not the other's to flush):

* Currant: ``enqueue_many`` on a warm App (pool open, schema checked), which
  encodes every payload, reserves the ids and COPYs the rows;
* the floor: one binary COPY of the same payload bytes (encoded before the
  clock starts) into ``floor.py``'s minimal table, ids by its sequence.

Wall clock of the call; jobs/s, medians, the ratio of the medians and the
median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import currant
from benchmarks.floor import create_floor_table
from benchmarks.scratch_db import fresh_database
from currant import codec

ARG = "x" * 32


def currant_round(dsn: str, jobs: int) -> float:
    target = fresh_database(dsn, "bench_enqueue_currant")
    app = currant.App(target, schema="currant")
    try:
        app.migrate()

        @app.task(name="bench.small_args")
        def small_args(i: int, text: str) -> None:
            """Never run: only enqueued."""

        app.get_job(1)  # opens the pool and checks the schema: the clock times the enqueue alone
        items = [(i, ARG) for i in range(jobs)]
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        started = time.perf_counter()
        ids = small_args.enqueue_many(items)
        seconds = time.perf_counter() - started
    finally:
        app.close()
    assert len(ids) == jobs
    return seconds


def floor_round(dsn: str, jobs: int) -> float:
    target = fresh_database(dsn, "bench_enqueue_floor")
    rows = [("default", "bench.small_args", codec.encode_payload((i, ARG), None)) for i in range(jobs)]
    with psycopg.connect(target, autocommit=True) as conn:
        create_floor_table(conn, "floor")
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy("COPY floor.t (queue, task, payload) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "text", "bytea"])
                for row in rows:
                    copy.write_row(row)
        seconds = time.perf_counter() - started
        count = conn.execute("SELECT count(*) FROM floor.t").fetchone()
    assert count == (jobs,)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, action="append")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = args.jobs or [100_000, 1_000_000]
    report: dict[str, Any] = {"command": " ".join(sys.argv), "sizes": {}}
    for jobs in sizes:
        runs: dict[str, list[float]] = {"floor": [], "currant": []}
        for round_ in range(args.rounds):
            for label in ("floor", "currant") if round_ % 2 == 0 else ("currant", "floor"):
                seconds = (floor_round if label == "floor" else currant_round)(args.dsn, jobs)
                runs[label].append(jobs / seconds)
                print(
                    f"{jobs:,} round {round_ + 1}/{args.rounds} {label}: {jobs / seconds:,.0f} jobs/s", file=sys.stderr
                )
        floor, mine = statistics.median(runs["floor"]), statistics.median(runs["currant"])
        pairs = statistics.median(c / f for c, f in zip(runs["currant"], runs["floor"], strict=True))
        report["sizes"][jobs] = {"runs": runs, "floor": floor, "currant": mine, "ratio": mine / floor, "pairs": pairs}
        print(f"{jobs:>9,} jobs: floor {floor:,.0f}/s  currant {mine:,.0f}/s  {mine / floor:.3f}x (pairs {pairs:.3f}x)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
