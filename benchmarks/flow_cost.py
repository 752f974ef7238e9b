"""What workflows and limits cost per job (issue 15), in interleaved rounds.

    python benchmarks/flow_cost.py [--dsn DSN] [--jobs N] [--rounds R] [--json PATH]

Each round, on fresh schemas, in the same order:

* plain: ``enqueue_many`` of N no-op jobs, then a ``--burst`` worker drains them;
* dependent: one parent, then N no-op jobs with ``depends_on=[parent]`` (each
  a 'waiting' row and a link), then a burst worker runs the parent (whose
  completion queues the N in its own transaction) and drains them;
* rate_limited / capped: N no-op jobs of a task with ``rate_limit="1000000/s"``
  or ``max_running=1000000``: limits that never hold anything back, so what is
  measured is the limited claim path itself (``claim_limited``).

Reports the median of each over the rounds: enqueue microseconds per job and
drain jobs/s (worker start to exit), and each case's ratio to plain.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import currant
from benchmarks import bench_app

CASES = ("plain", "dependent", "rate_limited", "capped")


def run_case(dsn: str, case: str, jobs: int) -> dict[str, float]:
    schema = f"bench_flow_{uuid.uuid4().hex[:8]}"
    app = currant.App(dsn, schema=schema)
    for task in bench_app.app.tasks.values():
        app.tasks[task.name] = task
    app.migrate()
    try:
        task = {"rate_limited": "bench.rate_limited", "capped": "bench.capped"}.get(case, "bench.noop")
        parents = [app.enqueue("bench.noop")] if case == "dependent" else None
        started = time.perf_counter()
        app.enqueue_many(task, [()] * jobs, depends_on=parents)
        enqueue = time.perf_counter() - started
        env = {**os.environ, "CURRANT_DSN": dsn, "CURRANT_SCHEMA": schema}
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "currant.worker", "benchmarks.bench_app:app", "--burst", "--log-level", "WARNING"],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
        drain = time.perf_counter() - started
        with psycopg.connect(dsn, autocommit=True) as conn:
            done = conn.execute(f"SELECT count(*) FROM \"{schema}\".jobs WHERE state = 'succeeded'").fetchone()[0]
        if done != jobs + (1 if parents else 0):
            raise SystemExit(f"{case}: {done} jobs succeeded, expected {jobs}")
        return {"enqueue_us_per_job": enqueue / jobs * 1e6, "drain_jobs_per_s": jobs / drain}
    finally:
        app.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("CURRANT_DSN"))
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.dsn:
        raise SystemExit("give --dsn or set CURRANT_DSN")
    runs: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    for round_ in range(args.rounds):
        for case in CASES:
            runs[case].append(run_case(args.dsn, case, args.jobs))
            print(f"round {round_ + 1} {case}: {runs[case][-1]}", file=sys.stderr)
    medians = {
        case: {metric: statistics.median(r[metric] for r in results) for metric in results[0]}
        for case, results in runs.items()
    }
    plain = medians["plain"]
    print(f"{args.jobs:,} jobs, median of {args.rounds} interleaved rounds")
    print(f"{'case':<14}{'enqueue us/job':>16}{'ratio':>8}{'drain jobs/s':>16}{'ratio':>8}")
    for case, m in medians.items():
        print(
            f"{case:<14}{m['enqueue_us_per_job']:>16.2f}{m['enqueue_us_per_job'] / plain['enqueue_us_per_job']:>8.2f}"
            f"{m['drain_jobs_per_s']:>16,.0f}{m['drain_jobs_per_s'] / plain['drain_jobs_per_s']:>8.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"jobs": args.jobs, "runs": runs, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
