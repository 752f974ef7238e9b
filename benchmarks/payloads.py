"""Issue 16, target 6: jobs with 10 KB of arguments and a 10 KB result, in MB/s.

    python benchmarks/payloads.py --dsn DSN [--jobs 20000] [--rounds 3] [--json out.json]

The bytes are random (os.urandom, one draw per run), so PostgreSQL's TOAST
compression cannot shrink them and both sides store every byte. Per round,
in alternating order, each in a fresh database:

* Currant: ``blob_echo.enqueue_many`` of N jobs whose one argument is the
  10 KB blob (timed on the caller's clock), a CHECKPOINT, then one
  ``python -m currant.worker benchmarks.bench_app:app --burst`` that returns
  the blob as each job's result (kept, as by default). Drain: the worker's
  own exit line (connect to exit).
* The floor, psycopg alone: one binary COPY of the same N blobs into a
  minimal table (``floor.py``'s); a CHECKPOINT; then one connection loops:
  claim 1,000 rows with ``FOR UPDATE SKIP LOCKED`` returning their blobs,
  COPY 1,000 results of the same size into a results table and delete the
  claimed rows, in one transaction.

MB/s counts payload bytes only: enqueue N x 10 KB, drain N x 20 KB (read
and written). Medians, and the ratio to the floor of the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.floor import BATCH, CLAIM, create_floor_table, statement
from benchmarks.scratch_db import fresh_database

CHECKOUT = Path(__file__).resolve().parent.parent
BLOB = 10_240
MB = 1_000_000
RATE = re.compile(r"processed in ([0-9.]+) s")
ENQUEUE = """
import os, sys, time
from benchmarks.bench_app import app, blob_echo
app.migrate()
blob = bytes.fromhex(os.environ["BENCH_BLOB"])
items = [(blob,)] * int(sys.argv[1])
started = time.perf_counter()
blob_echo.enqueue_many(items)
print(time.perf_counter() - started)
app.close()
"""


def currant_round(dsn: str, jobs: int, blob: bytes) -> dict[str, float]:
    target = fresh_database(dsn, "bench_payloads_currant")
    env = {**os.environ, "CURRANT_DSN": target, "CURRANT_SCHEMA": "currant", "BENCH_BLOB": blob.hex()}
    python = sys.executable
    enqueued = subprocess.run(
        [python, "-c", ENQUEUE, str(jobs)], cwd=CHECKOUT, env=env, check=True, capture_output=True, text=True
    )
    enqueue_s = float(enqueued.stdout.split()[-1])
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    done = subprocess.run(
        [python, "-m", "currant.worker", "benchmarks.bench_app:app", "--burst"],
        cwd=CHECKOUT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    found = RATE.search(done.stderr)
    if done.returncode != 0 or found is None or f"{jobs} succeeded" not in done.stderr:
        raise SystemExit(f"the worker exited {done.returncode}:\n{done.stderr[-3000:]}")
    with psycopg.connect(target, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM currant.jobs WHERE state = 'succeeded' AND octet_length(result) > %s", (BLOB,)
        ).fetchone()
    if row is None or row[0] != jobs:
        raise SystemExit(f"expected {jobs} results of more than {BLOB} bytes, found {row}")
    return {"enqueue_s": enqueue_s, "drain_s": float(found.group(1))}


def floor_round(dsn: str, jobs: int, blob: bytes) -> dict[str, float]:
    target = fresh_database(dsn, "bench_payloads_floor")
    with psycopg.connect(target, autocommit=True) as conn:
        create_floor_table(conn, "floor")
        conn.execute("CREATE TABLE floor.results (id bigint NOT NULL, result bytea NOT NULL)")
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            copy_stmt = "COPY floor.t (queue, task, payload) FROM STDIN (FORMAT BINARY)"
            with cur.copy(copy_stmt) as copy:
                copy.set_types(["text", "text", "bytea"])
                for _ in range(jobs):
                    copy.write_row(("default", "bench.blob_echo", blob))
        enqueue_s = time.perf_counter() - started
        conn.execute("CHECKPOINT")
        claim = statement(CLAIM, "floor")
        drained = 0
        started = time.perf_counter()
        with conn.cursor() as cur:
            while True:
                with conn.transaction():
                    batch = cur.execute(claim, prepare=True).fetchall()
                    if not batch:
                        break
                    with cur.copy("COPY floor.results (id, result) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(["int8", "bytea"])
                        for job_id, payload in batch:
                            copy.write_row((job_id, payload))
                    cur.execute("DELETE FROM floor.t WHERE id = ANY(%s)", ([row[0] for row in batch],), prepare=True)
                drained += len(batch)
        drain_s = time.perf_counter() - started
        results = conn.execute("SELECT count(*) FROM floor.results").fetchone()
    if drained != jobs or results is None or results[0] != jobs:
        raise SystemExit(f"the floor drained {drained} of {jobs}")
    return {"enqueue_s": enqueue_s, "drain_s": drain_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    assert BATCH == 1000
    blob = os.urandom(BLOB)
    rounds: dict[str, list[dict[str, float]]] = {"floor": [], "currant": []}
    for round_ in range(args.rounds):
        for label in ("floor", "currant") if round_ % 2 == 0 else ("currant", "floor"):
            run = floor_round if label == "floor" else currant_round
            result = run(args.dsn, args.jobs, blob)
            result["enqueue_mb_per_s"] = args.jobs * BLOB / MB / result["enqueue_s"]
            result["drain_mb_per_s"] = args.jobs * 2 * BLOB / MB / result["drain_s"]
            rounds[label].append(result)
            print(
                f"round {round_ + 1}/{args.rounds} {label}: enqueue {result['enqueue_mb_per_s']:.1f} MB/s,"
                f" drain {result['drain_mb_per_s']:.1f} MB/s",
                file=sys.stderr,
            )
    report: dict[str, Any] = {"command": " ".join(sys.argv), "jobs": args.jobs, "rounds": rounds, "metrics": {}}
    for metric in ("enqueue_mb_per_s", "drain_mb_per_s"):
        floor = statistics.median(r[metric] for r in rounds["floor"])
        mine = statistics.median(r[metric] for r in rounds["currant"])
        pairs = statistics.median(
            c[metric] / f[metric] for c, f in zip(rounds["currant"], rounds["floor"], strict=True)
        )
        report["metrics"][metric] = {"floor": floor, "currant": mine, "ratio": mine / floor, "pairs": pairs}
        print(f"{metric:<18} floor {floor:8.1f}  currant {mine:8.1f}  {mine / floor:.3f}x (pairs {pairs:.3f}x)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
