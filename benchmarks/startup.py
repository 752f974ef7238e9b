"""Issue 16, target 4: worker start-up, spawn to first claim and spawn to exit.

    python benchmarks/startup.py --dsn DSN [--rounds 7] [--json out.json]

Per round, in a fresh database (schema migrated beforehand, as a deployed
worker finds it):

* ``first claim``: one no-op job queued; ``python -m currant.worker
  benchmarks.bench_app:app --burst`` spawned; from the spawn (this clock) to
  the job's ``started_at`` (the database's clock at the claim; the same host,
  so the same clock);
* ``empty exit``: the same command on an empty queue, spawn to exit;
* where it goes: ``python -c pass`` (the interpreter alone) and ``python -c
  "import currant.cli"`` (the interpreter and the worker's imports), spawn
  to exit.

Medians and the spread over the rounds.

Bytecode first: an installed worker has its ``.pyc`` files (pip compiles them
at install), so this script compiles the checkout's (``compileall``) before
the first round. Without them (a checkout run with ``PYTHONDONTWRITEBYTECODE``
set, as on the machine of BENCHMARKS.md) every start compiles Currant's
modules again: 60-100 ms more.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.scratch_db import fresh_database

CHECKOUT = Path(__file__).resolve().parent.parent
WORKER = [sys.executable, "-m", "currant.worker", "benchmarks.bench_app:app", "--burst"]
PREPARE = "from benchmarks.bench_app import app, noop; app.migrate(); {enqueue}app.close()"


def spawn_to_exit(argv: list[str], env: dict[str, str]) -> float:
    started = time.time()
    subprocess.run(argv, cwd=CHECKOUT, env=env, check=True, capture_output=True)
    return time.time() - started


def one_round(dsn: str) -> dict[str, float]:
    target = fresh_database(dsn, "bench_startup")
    env = {**os.environ, "CURRANT_DSN": target, "CURRANT_SCHEMA": "currant"}
    subprocess.run([sys.executable, "-c", PREPARE.format(enqueue="")], cwd=CHECKOUT, env=env, check=True)
    result = {
        "interpreter_s": spawn_to_exit([sys.executable, "-c", "pass"], env),
        "imports_s": spawn_to_exit([sys.executable, "-c", "import currant.cli"], env),
        "empty_exit_s": spawn_to_exit(WORKER, env),
    }
    subprocess.run(
        [sys.executable, "-c", PREPARE.format(enqueue="noop.enqueue(); ")], cwd=CHECKOUT, env=env, check=True
    )
    spawned = time.time()
    subprocess.run(WORKER, cwd=CHECKOUT, env=env, check=True, capture_output=True)
    with psycopg.connect(target, autocommit=True) as conn:
        row = conn.execute("SELECT extract(epoch FROM started_at) FROM currant.jobs").fetchone()
    assert row is not None and row[0] is not None, "the job did not run"
    result["first_claim_s"] = float(row[0]) - spawned
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for package in ("currant", "benchmarks"):
        compileall.compile_dir(CHECKOUT / package, quiet=1)
    runs = [one_round(args.dsn) for _ in range(args.rounds)]
    report: dict[str, Any] = {"command": " ".join(sys.argv), "runs": runs, "median": {}}
    for metric in ("first_claim_s", "empty_exit_s", "imports_s", "interpreter_s"):
        values = sorted(r[metric] for r in runs)
        report["median"][metric] = statistics.median(values)
        print(f"{metric:<14} median {statistics.median(values):.3f} s  ({values[0]:.3f}-{values[-1]:.3f})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
