"""Jobs that wait, and jobs that compute, at scale (issue 16, item 5).

    python benchmarks/async_scale.py [--dsn DSN] [--rounds 3] [--quick] [--json FILE]

Without ``--dsn`` it uses ``$CURRANT_DSN``; one schema (``bench_async``) is
made fresh for every run and dropped at the end. Each run enqueues the jobs
with ``enqueue_many``, then times one ``python -m currant.worker
benchmarks.bench_async_app:app --burst`` from its own summary line (first claim to
exit; with ``--processes 2`` the children's lines are summed over the longest)
and, as the main number, from the first job's start to the last one's finish
(the database's clock: steady throughput, without the worker's start-up),
and samples the worker's memory (RSS of the process tree, every 0.2 s; the peak). Cases, each against the rate its concurrency allows:

* ``async 0.1 s x 20,000 @ 1,000``: ``await asyncio.sleep(0.1)``, --concurrency 1000 (limit 10,000/s);
* ``async 1 s x 100,000 @ 10,000``: ``await asyncio.sleep(1.0)``, --concurrency 10000 (limit 10,000/s);
* ``sync 0.05 s x 5,000 @ 64``: ``time.sleep(0.05)``, --concurrency 64 (limit 1,280/s);
* ``cpu 1 ms x 20,000``, ``--processes 1`` and ``--processes 2``: the ratio of the two.

``--quick`` divides every job count by 10 (a smoke run). Medians over
``--rounds``; the rounds interleave the cases.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make `currant` and `benchmarks` importable
    sys.path.insert(0, str(REPO))

import currant

SCHEMA = "bench_async"
WORKER_RATE = re.compile(r"(\d+) jobs processed in ([\d.]+) s")

# name: (task, argument, jobs, worker options, the rate concurrency allows or None)
CASES: dict[str, tuple[str, float, int, list[str], float | None]] = {
    "async 0.1 s x 20,000 @ 1,000": ("bench.async_sleep", 0.1, 20_000, ["--concurrency", "1000"], 10_000),
    "async 1 s x 100,000 @ 10,000": ("bench.async_sleep", 1.0, 100_000, ["--concurrency", "10000"], 10_000),
    "sync 0.05 s x 5,000 @ 64": ("bench.sleep", 0.05, 5_000, ["--concurrency", "64"], 1_280),
    "cpu 1 ms x 20,000, 1 process": ("bench.cpu", 1.0, 20_000, ["--processes", "1"], None),
    "cpu 1 ms x 20,000, 2 processes": ("bench.cpu", 1.0, 20_000, ["--processes", "2"], None),
}


def run_case(dsn: str, name: str, scale: int) -> dict[str, float]:
    task, argument, jobs, options, _limit = CASES[name]
    jobs //= scale
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    with currant.App(dsn, schema=SCHEMA) as app:
        app.migrate()
        app.enqueue_many(task, [(argument,)] * jobs)
    env = {**os.environ, "CURRANT_DSN": dsn, "CURRANT_SCHEMA": SCHEMA}
    argv = [sys.executable, "-m", "currant.worker", "benchmarks.bench_async_app:app", "--burst", *options]
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0.0]
    sampler = threading.Thread(target=_sample_rss, args=(proc.pid, peak), daemon=True)
    sampler.start()
    output, _ = proc.communicate(timeout=1800)
    wall = time.monotonic() - started
    sampler.join()
    lines = WORKER_RATE.findall(output)
    done = sum(int(n) for n, _ in lines)
    if proc.returncode != 0 or done != jobs:
        raise SystemExit(f"{name}: the worker failed ({proc.returncode}):\n{output[-3000:]}")
    seconds = max(float(s) for _, s in lines)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM {SCHEMA}.jobs"
        ).fetchone()
    steady = float(row[0]) if row and row[0] else seconds
    return {
        "jobs": jobs,
        "seconds": seconds,
        "rate": jobs / steady,
        "rate_with_startup": jobs / seconds,
        "wall": wall,
        "peak_rss_mb": peak[0],
    }


def _sample_rss(pid: int, peak: list[float]) -> None:
    """The process tree's resident memory, every 0.2 s, until it exits; the peak in peak[0] (MB)."""
    try:
        root = psutil.Process(pid)
        while root.is_running() and root.status() != psutil.STATUS_ZOMBIE:
            tree = [root, *root.children(recursive=True)]
            total = 0
            for process in tree:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass  # exited between the listing and the reading
            peak[0] = max(peak[0], total / 2**20)
            time.sleep(0.2)  # the sampling period
    except psutil.Error:
        return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dsn", default=os.environ.get("CURRANT_DSN"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="only these cases")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.dsn:
        parser.error("give --dsn or set CURRANT_DSN")
    names = args.case or list(CASES)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names:
            run = run_case(args.dsn, name, 10 if args.quick else 1)
            runs[name].append(run)
            print(f"round {round_ + 1} {name}: {run['rate']:,.0f} jobs/s, peak {run['peak_rss_mb']:.0f} MB", flush=True)
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    summary: dict[str, Any] = {"load_after": os.getloadavg(), "cases": {}}
    print(f"\n| case | jobs/s, steady (median of {args.rounds}) | of the limit | with start-up | peak worker memory |")
    print("|---|---|---|---|---|")
    for name in names:
        rate = statistics.median(r["rate"] for r in runs[name])
        memory = max(r["peak_rss_mb"] for r in runs[name])
        with_startup = statistics.median(r["rate_with_startup"] for r in runs[name])
        limit = CASES[name][4]
        share = f"{rate / limit:.2f}x" if limit else ""
        summary["cases"][name] = {"rate": rate, "peak_rss_mb": memory, "runs": runs[name]}
        print(f"| {name} | {rate:,.0f} | {share} | {with_startup:,.0f} | {memory:.0f} MB |")
    one, two = "cpu 1 ms x 20,000, 1 process", "cpu 1 ms x 20,000, 2 processes"
    if one in summary["cases"] and two in summary["cases"]:
        ratio = summary["cases"][two]["rate"] / summary["cases"][one]["rate"]
        summary["cpu_two_processes_ratio"] = ratio
        print(f"\n2 processes / 1 process on the CPU-bound job: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
