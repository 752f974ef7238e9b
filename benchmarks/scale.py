"""How Currant's drain scales: backlog size, worker processes, payload size, and its cost.

    python benchmarks/scale.py [--dsn DSN] [--runs 3] [--json PATH] [--quick]

Each case enqueues its jobs with ``enqueue_many``, then times one worker
command (``python -m currant.worker benchmarks.bench_app:app --burst``, with
``--processes N`` where the case says so) from spawn to exit, and checks that
every job succeeded exactly once. Per case it also reports:

* the drain rate on the database clock (first claim to last completion) and
  the wall-clock rate with worker start-up;
* CPU seconds per 1,000 jobs of the worker processes (their rusage) and of
  PostgreSQL (the server's processes, sampled with psutil, when the server
  runs on this machine);
* transaction ids consumed per job: the database's next xid
  (``pg_snapshot_xmax(pg_current_snapshot())``, which assigns none) before and
  after the drain.

Cases: backlog 10,000 vs 1,000,000 no-op jobs (``--quick``: 10,000 vs
100,000); 1, 2, 4, 8 worker processes on 200,000 jobs; payloads of ~100 B and
~10 KB (50,000 jobs each). Medians (min–max) over ``--runs``. Then the idle
case: statements per second sent by an idle worker with default options,
counted as ``benchmarks/e2e.py`` counts them (``--idle-seconds``, default 10).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import currant
from benchmarks.e2e import (
    REPO,
    count_idle_statements,
    embedded_server,
    fresh_target,
    log,
    machine_info,
    serving_worker,
    worker_cmd,
    worker_env,
)


@dataclass
class CaseResult:
    case: str
    jobs: int
    seconds: float
    jobs_per_s: float  # wall clock, worker start-up included
    drain_per_s: float  # first claim to last completion, database clock
    worker_cpu_per_1k: float
    postgres_cpu_per_1k: float | None
    xids_per_job: float
    ok: bool
    problem: str = ""


class PostgresCpu:
    """CPU seconds of the PostgreSQL processes on this machine over a span of time.

    Backends of the worker's connections exit with the worker, taking their
    counters with them, so a thread samples every process every 50 ms and keeps
    the last reading of each; a process first seen during the span counts from 0.
    """

    def __init__(self) -> None:
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def _sample(self) -> dict[int, float]:
        seen: dict[int, float] = {}
        for proc in psutil.process_iter(["name", "cpu_times"]):
            if proc.info["name"] in ("postgres", "postmaster") and proc.info["cpu_times"] is not None:
                seen[proc.pid] = proc.info["cpu_times"].user + proc.info["cpu_times"].system
        return seen

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(0.05):
            self.last.update(self._sample())

    def __enter__(self) -> PostgresCpu:
        self.start = self._sample()
        self.last = dict(self.start)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.last.update(self._sample())

    @property
    def seconds(self) -> float | None:
        if not self.start and not self.last:
            return None
        return sum(value - self.start.get(pid, 0.0) for pid, value in self.last.items())


def _next_xid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetchone()
    assert row is not None
    return int(row[0])


def run_case(
    base_dsn: str,
    case: str,
    jobs: int,
    task: str,
    args: tuple[Any, ...],
    processes: int,
    run: int,
    sample_cpu: bool = True,
) -> CaseResult:
    with fresh_target(base_dsn, run) as (dsn, schema):
        app = currant.App(dsn, schema=schema)
        app.migrate()
        for start in range(0, jobs, 200_000):
            app.enqueue_many(task, [args] * min(200_000, jobs - start))
        env = worker_env(dsn, schema)
        extra = ["--burst", "--log-level", "WARNING"]
        if processes > 1:
            extra += ["--processes", str(processes)]
        with psycopg.connect(dsn, autocommit=True) as conn:
            xid_before = _next_xid(conn)
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            with PostgresCpu() if sample_cpu else contextlib.nullcontext() as postgres_cpu:
                started = time.perf_counter()
                proc = subprocess.run(
                    worker_cmd(*extra), env=env, cwd=REPO, capture_output=True, text=True, timeout=3600
                )
                seconds = time.perf_counter() - started
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            xid_after = _next_xid(conn)
            row = conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE state = 'succeeded' AND attempts = 1),"
                f' extract(epoch FROM max(finished_at) - min(started_at)) FROM "{schema}".jobs'
            ).fetchone()
        app.close()
    worker_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    problem = ""
    if proc.returncode != 0:
        problem = f"worker exited {proc.returncode}: {proc.stderr[-300:]}"
    elif row is None or row[:2] != (jobs, jobs):
        problem = f"expected {jobs} jobs succeeded once, found {row}"
    pg_seconds = postgres_cpu.seconds if postgres_cpu is not None else None
    return CaseResult(
        case=case,
        jobs=jobs,
        seconds=seconds,
        jobs_per_s=jobs / seconds,
        drain_per_s=jobs / float(row[2]) if row and row[2] else 0.0,
        worker_cpu_per_1k=worker_cpu / jobs * 1000,
        postgres_cpu_per_1k=None if pg_seconds is None else pg_seconds / jobs * 1000,
        xids_per_job=(xid_after - xid_before) / jobs,
        ok=not problem,
        problem=problem,
    )


IDLE_CASE = "idle worker"


def idle_case(base_dsn: str, run: int, seconds: float) -> dict[str, Any]:
    """Statements per second of an idle worker (default options) on an empty queue."""
    with fresh_target(base_dsn, run) as (dsn, schema):
        app = currant.App(dsn, schema=schema)
        app.migrate()
        dbname = conninfo_to_dict(dsn).get("dbname") or "postgres"
        with serving_worker(base_dsn, str(dbname), worker_env(dsn, schema), app) as served:
            idle = count_idle_statements(base_dsn, str(dbname), seconds)
        app.close()
    idle["ok"] = served.returncode == 0
    idle["problem"] = "" if idle["ok"] else f"worker exited {served.returncode}: {served.stderr.strip()[-300:]}"
    return idle


def cases(quick: bool) -> list[tuple[str, int, str, tuple[Any, ...], int]]:
    big = 100_000 if quick else 1_000_000
    many = 50_000 if quick else 200_000
    payloads = 20_000 if quick else 50_000
    return [
        ("backlog 10k", 10_000, "bench.noop", (), 1),
        (f"backlog {big // 1000}k", big, "bench.noop", (), 1),
        *[(f"{n} process{'es' if n > 1 else ''}", many, "bench.noop", (), n) for n in (1, 2, 4, 8)],
        ("payload 100 B", payloads, "bench.small", ("x" * 100,), 1),
        ("payload 10 KB", payloads, "bench.blob", (os.urandom(10_000),), 1),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("CURRANT_DSN"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="smaller backlogs, for a first look")
    parser.add_argument("--cases", default="", help="only the cases whose name contains this (e.g. 'backlog')")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="window of the idle case")
    parser.add_argument(
        "--no-cpu",
        action="store_true",
        help="do not sample PostgreSQL's CPU (the sampler walks every process each 50 ms: on"
        " 2 cores that costs the drain a few percent)",
    )
    args = parser.parse_args(argv)
    if args.dsn:
        return bench(args.dsn, args)
    with embedded_server() as dsn:
        return bench(dsn, args)


def bench(dsn: str, args: argparse.Namespace) -> int:
    results: list[CaseResult] = []
    plan = [case for case in cases(args.quick) if args.cases in case[0]]
    for run in range(1, args.runs + 1):
        for name, jobs, task, task_args, processes in plan:
            log(f"run {run}/{args.runs}: {name} ({jobs:,} jobs, {processes} process(es))")
            result = run_case(dsn, name, jobs, task, task_args, processes, run, sample_cpu=not args.no_cpu)
            log(
                f"  {result.drain_per_s:,.0f} jobs/s drain, {result.jobs_per_s:,.0f} with start-up"
                f"{'' if result.ok else '  FAILED: ' + result.problem}"
            )
            results.append(result)
    print(
        f"{'case':<16} {'jobs':>9} {'drain jobs/s median (min-max)':>32} {'with start-up':>13}"
        f" {'worker cpu/1k':>14} {'pg cpu/1k':>10} {'xids/job':>9}"
    )
    summary: dict[str, dict[str, Any]] = {}
    for name, jobs, *_ in plan:
        ok = [r for r in results if r.case == name and r.ok]
        if not ok:
            print(f"{name:<16} {jobs:>9,} {'FAILED':>28}")
            continue
        rates = [r.drain_per_s for r in ok]
        pg = [r.postgres_cpu_per_1k for r in ok if r.postgres_cpu_per_1k is not None]
        entry = {
            "jobs": jobs,
            "jobs_per_s": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "with_startup_per_s": statistics.median(r.jobs_per_s for r in ok),
            "worker_cpu_per_1k": statistics.median(r.worker_cpu_per_1k for r in ok),
            "postgres_cpu_per_1k": statistics.median(pg) if pg else None,
            "xids_per_job": statistics.median(r.xids_per_job for r in ok),
            "runs_passed": len(ok),
        }
        summary[name] = entry
        pg_text = f"{entry['postgres_cpu_per_1k']:.3f}" if pg else "n/a"
        print(
            f"{name:<16} {jobs:>9,} {entry['jobs_per_s']:>14,.0f} ({entry['min']:,.0f}-{entry['max']:,.0f})"
            f" {entry['with_startup_per_s']:>13,.0f} {entry['worker_cpu_per_1k']:>14.3f} {pg_text:>10}"
            f" {entry['xids_per_job']:>9.4f}"
        )
    idle_runs: list[dict[str, Any]] = []
    if args.cases in IDLE_CASE:
        for run in range(1, args.runs + 1):
            log(f"run {run}/{args.runs}: {IDLE_CASE}, {args.idle_seconds:.0f} s")
            idle_runs.append(idle_case(dsn, run, args.idle_seconds))
            log(
                f"  {idle_runs[-1]['statements_per_s']:.2f} statements/s"
                f"{'' if idle_runs[-1]['ok'] else '  FAILED: ' + idle_runs[-1]['problem']}"
            )
        rates = [r["statements_per_s"] for r in idle_runs if r["ok"]]
        if rates:
            summary[IDLE_CASE] = {
                "statements_per_s": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "runs_passed": len(rates),
            }
            print(f"{IDLE_CASE:<16} statements/s {statistics.median(rates):.2f} ({min(rates):.2f}-{max(rates):.2f})")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine_info(dsn),
                    "runs": [asdict(r) for r in results],
                    "idle_runs": idle_runs,
                    "summary": summary,
                },
                indent=2,
            )
        )
    return 0 if all(r.ok for r in results) and all(r["ok"] for r in idle_runs) else 1


if __name__ == "__main__":
    sys.exit(main())
