"""Slow jobs across workers: does every worker with a free lane get some?

    python benchmarks/slow_jobs.py --dsn DSN [--workers 2] [--concurrency 4] [--jobs 200]
        [--seconds 0.1] [--rounds 3] [--worker-arg=--processes --worker-arg=2]

Per round, in a fresh database: ``--workers`` serving ``python -m
currant.worker benchmarks.bench_app:app --concurrency N`` start and
register, then one ``enqueue_many`` of ``--jobs`` ``bench.sleep`` jobs of
``--seconds``. Measured from the enqueue to the last completion (database
clock), against the limit the lanes set: workers × concurrency ÷ seconds
(× processes, with ``--processes``). Also how many jobs each worker process ran.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import currant
from benchmarks.scratch_db import fresh_database

CHECKOUT = Path(__file__).resolve().parent.parent


def one_round(dsn: str, args: argparse.Namespace) -> tuple[float, list[int]]:
    target = fresh_database(dsn, "bench_slow_jobs")
    app = currant.App(target, schema="currant")
    app.migrate()
    env = {**os.environ, "CURRANT_DSN": target, "CURRANT_SCHEMA": "currant"}
    command = [sys.executable, "-m", "currant.worker", "benchmarks.bench_app:app"]
    command += ["--concurrency", str(args.concurrency), *args.worker_arg]
    workers = [subprocess.Popen(command, cwd=CHECKOUT, env=env, stderr=subprocess.DEVNULL) for _ in range(args.workers)]
    processes = args.workers * _processes(args.worker_arg)
    try:
        with psycopg.connect(target, autocommit=True) as conn:
            _wait(lambda: conn.execute("SELECT count(*) FROM currant.workers").fetchone()[0] >= processes, 60)
            app.enqueue_many("bench.sleep", [(args.seconds,)] * args.jobs)
            done = "SELECT count(*) FROM currant.jobs WHERE state = 'succeeded'"
            _wait(lambda: conn.execute(done).fetchone()[0] >= args.jobs, 600)
            first, last = conn.execute("SELECT min(enqueued_at), max(finished_at) FROM currant.jobs").fetchone()
            per_worker = [n for (n,) in conn.execute("SELECT count(*) FROM currant.jobs GROUP BY worker_id ORDER BY 1")]
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(60)
        app.close()
    return args.jobs / (last - first).total_seconds(), per_worker


def _processes(worker_args: list[str]) -> int:
    return int(worker_args[worker_args.index("--processes") + 1]) if "--processes" in worker_args else 1


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s")
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker-arg", action="append", default=[], help="passed to every worker (repeat)")
    args = parser.parse_args()
    limit = args.workers * _processes(args.worker_arg) * args.concurrency / args.seconds
    rates = []
    for round_ in range(args.rounds):
        rate, per_worker = one_round(args.dsn, args)
        rates.append(rate)
        print(
            f"round {round_ + 1}/{args.rounds}: {rate:,.1f} jobs/s ({rate / limit:.2f}x the limit), per worker {per_worker}"
        )
    median = statistics.median(rates)
    print(f"median {median:,.1f} jobs/s, limit {limit:,.0f}: {median / limit:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
