"""Issue 16, target 1: Currant's drain against the claim-and-delete floor, interleaved.

    python benchmarks/drain_floor.py --dsn DSN [--jobs 500000] [--rounds 3] [--json out.json]

Per round, in alternating order, each in its own fresh database and after a
CHECKPOINT of the enqueued rows:

* ``floor``: bare psycopg (``floor.py``, with Currant's planner settings):
  one connection claims 1,000 rows with ``FOR UPDATE SKIP LOCKED``, marking
  them running, then deletes them; timed from the first claim to the last
  delete.
* ``default``: ``python -m currant.worker benchmarks.bench_app:app --burst``,
  which keeps every finished job for a day.
* ``keep0``: the same with ``--keep-succeeded 0``: a job that returns None is
  deleted as it completes, as the floor deletes it.

Steady: the worker's own exit line (connect to exit, start-up imports
excluded); with start-up: spawn to exit on the caller's clock. Reported:
medians, their ratio to the floor, and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.drain_ab import compare, run_tree
from benchmarks.floor import run_floor
from benchmarks.scratch_db import drop_database, fresh_database

CHECKOUT = Path(__file__).resolve().parent.parent
VARIANTS: dict[str, tuple[str, ...]] = {"default": (), "keep0": ("--keep-succeeded", "0")}


def floor_round(dsn: str, jobs: int) -> dict[str, float]:
    dbname = "bench_drain_floor"
    try:
        result = run_floor(fresh_database(dsn, dbname), jobs, guarded=True, checkpoint=True)
    finally:
        drop_database(dsn, dbname)
    if not result["ok"]:
        raise SystemExit(f"the floor drained {result['drained']} of {jobs}")
    rate = float(result["drain_jobs_per_s"])
    return {"jobs_per_s": rate, "with_start_up_jobs_per_s": rate}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    labels = ["floor", *VARIANTS]
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    for round_ in range(args.rounds):
        for label in labels if round_ % 2 == 0 else labels[::-1]:
            if label == "floor":
                result = floor_round(args.dsn, args.jobs)
            else:
                result = run_tree(CHECKOUT, args.dsn, args.jobs, worker_args=VARIANTS[label])
            runs[label].append(result)
            print(
                f"round {round_ + 1}/{args.rounds} {label}: {result['jobs_per_s']:,.0f} jobs/s steady, "
                f"{result['with_start_up_jobs_per_s']:,.0f} with start-up",
                file=sys.stderr,
            )
    # The floor has no start-up: its one rate stands for both.
    report = {
        "command": " ".join(sys.argv),
        "runs": runs,
        "metrics": compare(runs, ("jobs_per_s", "with_start_up_jobs_per_s")),
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
