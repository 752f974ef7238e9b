"""Interleaved A/B(/C...) of the no-op drain alone, across checkouts of Currant.

    python benchmarks/drain_ab.py --dsn DSN --tree before=/path/a --tree after=/path/b \\
        [--rounds 7] [--jobs 200000] [--json results.json] [--no-checkpoint] [--archive LABEL]

``benchmarks/ab.py`` runs the whole of ``e2e.py`` per tree, floors included,
and a drain there may meet the checkpoint of the previous run's writes. Here
every run is the same few steps, in its own fresh database: that tree's code
enqueues ``--jobs`` no-op jobs, the server checkpoints, then one ``python -m
currant.worker benchmarks.bench_app:app --burst`` of that tree drains them.
Reported per tree: the worker's own jobs/s (its exit line: first claim to
exit), and its CPU (user + system) per job, start-up included. Trees go
round-robin, the order alternating per round; medians, ratios of medians to
the first tree, and medians of the per-round ratios. ``--archive LABEL`` turns
the partitioned archive (``currant.archive``) on for that label's runs, so
``--tree default=. --tree archive=. --archive archive`` compares the layouts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.scratch_db import drop_database, fresh_database

ENQUEUE = "from benchmarks.bench_app import app, noop; app.migrate(); noop.enqueue_many([()] * {n}); app.close()"
ARCHIVE_ON = (
    "from benchmarks.bench_app import app; from currant import archive; app.run_plan(archive.enable(app.sql, 3600))"
)
RATE = re.compile(r"processed in [0-9.]+ s \(([0-9,]+) jobs/s")


def run_tree(
    path: Path, dsn: str, jobs: int, checkpoint: bool = True, worker_args: Sequence[str] = (), archive: bool = False
) -> dict[str, float]:
    """One drain by that tree's worker (``worker_args`` added to its command line):
    its own jobs/s, jobs/s from spawn to exit, and CPU per job."""
    dbname = f"bench_drain_ab_{os.getpid()}"
    env = {**os.environ, "CURRANT_DSN": fresh_database(dsn, dbname), "CURRANT_SCHEMA": "currant"}
    python = str(path / ".venv/bin/python")
    try:
        subprocess.run([python, "-c", ENQUEUE.format(n=jobs)], cwd=path, env=env, check=True)
        if archive:
            subprocess.run([python, "-c", ARCHIVE_ON], cwd=path, env=env, check=True)
        if checkpoint:
            with psycopg.connect(env["CURRANT_DSN"], autocommit=True) as conn:
                conn.execute("CHECKPOINT")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        spawned = time.perf_counter()
        done = subprocess.run(
            [python, "-m", "currant.worker", "benchmarks.bench_app:app", "--burst", *worker_args],
            cwd=path,
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        wall = time.perf_counter() - spawned
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        drop_database(dsn, dbname)
    found = RATE.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{path}: the worker exited {done.returncode}:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "jobs_per_s": float(found.group(1).replace(",", "")),
        "with_start_up_jobs_per_s": jobs / wall,
        "cpu_us_per_job": cpu / jobs * 1e6,
    }


def compare(runs: dict[str, list[dict[str, float]]], metrics: Sequence[str]) -> dict[str, Any]:
    """Per metric, each label's median and its ratio to the first label's: of
    the medians, and the median of the per-round ratios. Printed, and returned."""
    first = next(iter(runs))
    compared: dict[str, Any] = {}
    for metric in metrics:
        medians = {label: statistics.median(r[metric] for r in rs) for label, rs in runs.items()}
        rounds = {
            label: statistics.median(a[metric] / b[metric] for a, b in zip(rs, runs[first], strict=True))
            for label, rs in runs.items()
        }
        compared[metric] = {"median": medians, "median_of_round_ratios": rounds}
        for label in medians:
            print(
                f"{metric:<26} {label:<10} {medians[label]:>12,.2f}  "
                f"{medians[label] / medians[first]:.3f}x (rounds {rounds[label]:.3f}x)"
            )
    return compared


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--tree", action="append", required=True, metavar="LABEL=PATH")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--archive", action="append", default=[], metavar="LABEL", help="the archive on for LABEL")
    parser.add_argument(
        "--no-checkpoint", action="store_true", help="drain right after the enqueue, its writes not yet checkpointed"
    )
    args = parser.parse_args()
    trees = [(label, Path(path).resolve()) for label, _, path in (t.partition("=") for t in args.tree)]
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    for round_ in range(args.rounds):
        order = trees if round_ % 2 == 0 else trees[::-1]
        for label, path in order:
            runs[label].append(
                run_tree(path, args.dsn, args.jobs, checkpoint=not args.no_checkpoint, archive=label in args.archive)
            )
            last = runs[label][-1]
            print(
                f"round {round_ + 1}/{args.rounds} {label}: {last['jobs_per_s']:,.0f} jobs/s, "
                f"{last['cpu_us_per_job']:.2f} us CPU/job",
                file=sys.stderr,
            )
    report = {"command": " ".join(sys.argv), "runs": runs, "metrics": compare(runs, ("jobs_per_s", "cpu_us_per_job"))}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
