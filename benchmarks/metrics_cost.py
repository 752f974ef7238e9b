"""What observability costs, in one command (issue 14).

    python benchmarks/metrics_cost.py [--dsn DSN] [--jobs 1000000] [--scrapes 30]
                                      [--drain-jobs 200000] [--pairs 5] [--json FILE]
                                      [--skip-scrape | --skip-drain]

Without ``--dsn`` it uses ``$CURRANT_DSN``. Two schemas of that database are
used and dropped at the end (``bench_dash_pages``, ``bench_metrics_drain``).

(a) **A database scrape on a big table.** The dashboard benchmark's table of
    ``--jobs`` jobs (most finished, 1.5 % waiting over three queues, failures
    with 2 KB tracebacks), VACUUM ANALYZEd, then ``--scrapes`` scrapes: the
    five statements of ``currant/sql/metrics.sql`` through ``App.run_plan``
    and the text exposition, as ``python -m currant metrics`` serves them.
    Each statement is also timed alone. Median and 95th percentile, ms.

(b) **A drain with metrics and an idle tracer on, against off.** ``--drain-jobs``
    no-op jobs, one ``python -m currant.worker benchmarks.bench_app:app
    --burst``; "on" adds ``--metrics-port`` (with a scraper reading it every
    second) and the tracing hook with no SDK installed (OpenTelemetry's
    default no-op provider: the "idle tracer"). Pairs alternate their order;
    medians of each side, and the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make `currant` and `benchmarks` importable
    sys.path.insert(0, str(REPO))

from benchmarks.dashboard import _WORKER_RATE, FILL, PAGES_SCHEMA, _free_port, drop_schema, fresh_schema, log, machine
from currant import metrics

DRAIN_SCHEMA = "bench_metrics_drain"


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered) * 1000,
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000,
    }


def bench_scrape(dsn: str, jobs: int, scrapes: int) -> dict[str, Any]:
    app = fresh_schema(dsn, PAGES_SCHEMA)
    log(f"writing {jobs:,} jobs")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in FILL.replace("{s}", PAGES_SCHEMA).split(";\n"):
            if statement.strip():
                conn.execute(statement, {"n": jobs} if "%(n)s" in statement else None)
        conn.execute(f"VACUUM ANALYZE {PAGES_SCHEMA}.jobs")
        size = conn.execute(f"SELECT pg_size_pretty(pg_total_relation_size('{PAGES_SCHEMA}.jobs'))").fetchone()
    whole: list[float] = []
    for _ in range(scrapes):
        started = time.perf_counter()
        metrics.exposition(app.run_plan(metrics.snapshot(app.sql, app.schema)))
        whole.append(time.perf_counter() - started)
    statements: dict[str, list[float]] = {}
    names = ("metrics_waiting_jobs", "metrics_oldest_ready", "metrics_workers", "metrics_table", "metrics_server")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET search_path = {PAGES_SCHEMA}")
        for _ in range(scrapes):
            for name in names:
                params = {"table": f"{PAGES_SCHEMA}.jobs"} if name == "metrics_table" else None
                started = time.perf_counter()
                conn.execute(app.sql[name], params).fetchall()
                statements.setdefault(name, []).append(time.perf_counter() - started)
    app.close()
    drop_schema(dsn, PAGES_SCHEMA)
    return {
        "jobs": jobs,
        "size": size[0] if size else "?",
        "scrape": _ms(whole),
        "statements": {name: _ms(s) for name, s in statements.items()},
    }


class Scraper:
    """Reads a worker's /metrics once a second, as Prometheus would."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as reply:
                    reply.read()
                self.scrapes += 1
            except OSError:
                pass  # not serving yet

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def drain_once(dsn: str, jobs: int, observed: bool) -> dict[str, Any]:
    app = fresh_schema(dsn, DRAIN_SCHEMA)
    app.enqueue_many("bench.noop", [()] * jobs)
    app.close()
    env = {**os.environ, "CURRANT_DSN": dsn, "CURRANT_SCHEMA": DRAIN_SCHEMA}
    argv = [sys.executable, "-m", "currant.worker", "benchmarks.bench_app:app", "--burst"]
    scraper = None
    if observed:
        port = _free_port()
        argv += ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
        env["CURRANT_BENCH_TRACING"] = "1"
        scraper = Scraper(port)
    try:
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    finally:
        if scraper is not None:
            scraper.close()
    match = _WORKER_RATE.search(proc.stderr + proc.stdout)
    if proc.returncode != 0 or match is None or int(match.group(1)) != jobs:
        raise RuntimeError(f"the drain failed: {proc.returncode}\n{proc.stderr[-2000:]}")
    seconds = float(match.group(2))
    return {"seconds": seconds, "rate": jobs / seconds, "scrapes": scraper.scrapes if scraper else 0}


def bench_drain(dsn: str, jobs: int, pairs: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for pair in range(pairs):
        for side in ("off", "on") if pair % 2 == 0 else ("on", "off"):
            run = drain_once(dsn, jobs, side == "on")
            runs[side].append(run)
            log(f"pair {pair + 1}, observability {side}: {run['seconds']:.2f} s ({run['rate']:,.0f} jobs/s)")
    drop_schema(dsn, DRAIN_SCHEMA)
    medians = {side: statistics.median(r["rate"] for r in rs) for side, rs in runs.items()}
    ratios = [on["rate"] / off["rate"] for off, on in zip(runs["off"], runs["on"], strict=True)]
    return {
        "runs": runs,
        "medians": medians,
        "ratio": medians["on"] / medians["off"],
        "pair_ratio": statistics.median(ratios),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dsn", default=os.environ.get("CURRANT_DSN"))
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--drain-jobs", type=int, default=200_000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--skip-drain", action="store_true")
    parser.add_argument("--skip-scrape", action="store_true", help="only (b), the drain pairs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.dsn:
        parser.error("give --dsn or set CURRANT_DSN")
    result: dict[str, Any] = {"machine": machine(args.dsn), "load_before": os.getloadavg()}
    if not args.skip_scrape:
        result["scrape"] = scrape = bench_scrape(args.dsn, args.jobs, args.scrapes)
        print(
            f"scrape of {args.jobs:,} jobs ({scrape['size']}): median {scrape['scrape']['median']:.2f} ms, "
            f"p95 {scrape['scrape']['p95']:.2f} ms"
        )
        for name, t in scrape["statements"].items():
            print(f"  {name}: median {t['median']:.2f} ms, p95 {t['p95']:.2f} ms")
    if not args.skip_drain:
        result["drain"] = drain = bench_drain(args.dsn, args.drain_jobs, args.pairs)
        print(
            f"drain {args.drain_jobs:,} jobs: off {drain['medians']['off']:,.0f} jobs/s, "
            f"on {drain['medians']['on']:,.0f} jobs/s; on/off {drain['ratio']:.3f} "
            f"(median of pair ratios {drain['pair_ratio']:.3f})"
        )
    result["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
