"""The dashboard's two costs, in one command.

    python benchmarks/dashboard.py [--dsn DSN] [--jobs 1000000] [--requests 30]
                                   [--drain-jobs 500000] [--pairs 5] [--out benchmarks/results/dashboard.md]

Without ``--dsn`` it uses ``$CURRANT_DSN``. Everything happens in two schemas
of that database, dropped at the end (``bench_dash_pages``,
``bench_dash_drain``).

(a) **Server time per page with a big table.** ``--jobs`` jobs (default one
    million) are written straight into ``jobs`` by SQL, most of them finished
    (93 % succeeded, 4 % failed, 1 % cancelled; 1.5 % queued over three queues,
    some scheduled, retrying and running; each failure with a 2 KB traceback,
    as real ones are), with an hour of activity and id marks,
    workers, deaths and schedules, then VACUUM ANALYZE. Each page is requested
    ``--requests`` times through the ASGI app in this process (httpx's
    ASGITransport: no network, so the time is the server's: routing, every
    query, rendering). "cold" clears the dashboard's cache before every request
    (what the first viewer after a quiet spell pays), "warm" does not (what
    every other viewer and every live refresh within the cache's few seconds
    pays). Median, 95th percentile and maximum, in ms.

(b) **What an open dashboard costs a running drain.** ``--drain-jobs`` no-op
    jobs are enqueued, then one ``python -m currant.worker
    benchmarks.bench_app:app --burst`` drains them; its own summary line gives the
    time. Runs come in pairs, the two orders alternating (without/with, then
    with/without): "with" runs ``python -m currant dashboard`` as a separate
    process with one SSE client connected and a browser's refreshes (the
    overview and the job list, each once a second, plus one more fetch per live
    event). Medians of each side and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make `currant` and `benchmarks` importable
    sys.path.insert(0, str(REPO))

import currant
from currant.dashboard import asgi_app

PAGES_SCHEMA = "bench_dash_pages"
DRAIN_SCHEMA = "bench_dash_drain"
_WORKER_RATE = re.compile(r"(\d+) jobs processed in ([\d.]+) s")

FILL = """
INSERT INTO {s}.jobs (id, queue, task, payload, state, attempts, max_attempts, run_at, enqueued_at, started_at,
                      finished_at, worker_id, errors)
SELECT i,
       (ARRAY['default', 'mail', 'reports'])[1 + i %% 3],
       (ARRAY['app.send_mail', 'app.resize', 'app.report', 'app.sync'])[1 + i %% 4],
       '\\x929201a17881a16b02'::bytea,
       s.state::{s}.job_state,
       CASE WHEN s.state IN ('queued', 'scheduled') THEN 0 ELSE 1 END,
       CASE WHEN s.state = 'failed' THEN 1 END,
       t + CASE WHEN s.state = 'scheduled' THEN interval '2 hours' WHEN s.state = 'retrying' THEN interval '5 minutes'
                ELSE interval '0' END,
       t, CASE WHEN s.state NOT IN ('queued', 'scheduled') THEN t END,
       CASE WHEN s.state IN ('succeeded', 'failed', 'cancelled') THEN t + interval '1 second' END,
       CASE WHEN s.state = 'running' THEN 1 END,
       CASE WHEN s.state IN ('failed', 'retrying') THEN jsonb_build_array(jsonb_build_object(
           'attempt', 1, 'at', t, 'error', 'ValueError: bad input ' || (i %% 97),
           'traceback', E'Traceback (most recent call last):\\n'
               || repeat(E'  File "/srv/app/tasks.py", line 120, in handle\\n    result = process(payload)\\n', 20)
               || 'ValueError: bad input')) END
FROM generate_series(1, %(n)s) AS i,
     LATERAL (SELECT now() - make_interval(secs => (%(n)s - i) * 0.08) AS t) AS tt,
     LATERAL (SELECT CASE
         WHEN i > %(n)s - %(n)s * 15 / 1000 AND i %% 20 <> 0 THEN 'queued'
         WHEN i %% 25 = 0 THEN 'failed'
         WHEN i %% 100 = 1 THEN 'cancelled'
         WHEN i %% 333 = 7 THEN 'scheduled'
         WHEN i %% 1000 = 3 THEN 'retrying'
         WHEN i > %(n)s - %(n)s * 20 / 1000 AND i %% 20 = 0 THEN 'running'
         ELSE 'succeeded' END AS state) AS s;
SELECT setval('{s}.jobs_id_seq', %(n)s);
INSERT INTO {s}.activity (minute, queue, task, outcome, jobs)
SELECT date_trunc('minute', now()) - make_interval(mins => m), q, 'app.sync', o, (700 + 300 * sin(m / 6.0))::bigint
       * CASE o WHEN 'succeeded' THEN 10 ELSE 1 END
FROM generate_series(0, 59) AS m, unnest(ARRAY['default', 'mail', 'reports']) AS q,
     unnest(ARRAY['succeeded', 'failed', 'retried']) AS o;
INSERT INTO {s}.id_marks (minute, last_id)
SELECT date_trunc('minute', now()) - make_interval(mins => m), %(n)s - m * 24000 FROM generate_series(0, 60) AS m;
INSERT INTO {s}.workers (hostname, pid, queues, concurrency, running)
SELECT 'host-' || w, 1000 + w, ARRAY['default', 'mail', 'reports'], 8, 8 FROM generate_series(1, 4) AS w;
INSERT INTO {s}.worker_deaths (worker_id, hostname, pid, queues, concurrency, running, started_at, last_seen,
                               declared_dead_at, rescued, poisoned, job_ids)
SELECT 100 + d, 'host-dead', 2000 + d, ARRAY['default'], 8, 3, now() - interval '2 hours',
       now() - make_interval(mins => d * 10), now() - make_interval(mins => d * 10 - 1), 3, 0, ARRAY[d, d + 1, d + 2]
FROM generate_series(1, 3) AS d;
INSERT INTO {s}.periodic (name, schedule, last_tick)
SELECT 'report_' || p, '*/' || p || ' * * * *', date_trunc('minute', now()) FROM generate_series(1, 5) AS p;
"""


def log(message: str) -> None:
    print(f"[dashboard-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fresh_schema(dsn: str, schema: str) -> currant.App:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    app = currant.App(dsn, schema=schema)
    app.migrate()
    return app


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# -- (a) server time per page ---------------------------------------------------


def page_paths(n: int) -> list[tuple[str, str]]:
    failed_id = (n // 25) * 25
    return [
        ("overview", "/"),
        ("jobs (all)", "/jobs"),
        ("jobs state=failed", "/jobs?state=failed"),
        ("jobs state=failed, page 100 back", f"/jobs?state=failed&before={n - 100 * 50 * 25}"),
        ("jobs state=queued&queue=mail", "/jobs?state=queued&queue=mail"),
        ("jobs state=retrying", "/jobs?state=retrying"),
        ("jobs task=app.sync", "/jobs?task=app.sync"),
        ("jobs state=failed&error=input 5", "/jobs?state=failed&error=input+5"),
        ("job (failed)", f"/jobs/{failed_id}"),
        ("workers", "/workers"),
        ("periodic", "/periodic"),
        ("health", "/health"),
        ("bulk confirm (retry failed, mail)", "/jobs/bulk?action=retry&state=failed&queue=mail"),
        ("bulk confirm (cancel waiting)", "/jobs/bulk?action=cancel"),
    ]


async def time_pages(app: currant.App, paths: list[tuple[str, str]], requests: int) -> list[dict[str, Any]]:
    starlette = asgi_app(app, use_env=False)
    dashboard = starlette.state.dashboard
    results = []
    transport = httpx.ASGITransport(app=starlette)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for name, path in paths:
            row: dict[str, Any] = {"page": name, "path": path}
            for mode in ("cold", "warm"):
                times = []
                await client.get(path)  # the first request of a path also plans its statements
                for _ in range(requests):
                    if mode == "cold":
                        dashboard.cache.clear()
                    start = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, (path, response.status_code, response.text[:300])
                times.sort()
                row[mode] = {
                    "median": statistics.median(times),
                    "p95": times[int(len(times) * 0.95) - 1],
                    "max": times[-1],
                }
            results.append(row)
            log(f"{name}: cold median {row['cold']['median']:.1f} ms, warm {row['warm']['median']:.1f} ms")
    await app.aclose()
    return results


def bench_pages(dsn: str, jobs: int, requests: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    app = fresh_schema(dsn, PAGES_SCHEMA)
    log(f"writing {jobs:,} jobs")
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in FILL.replace("{s}", PAGES_SCHEMA).split(";\n"):
            if statement.strip():
                conn.execute(statement, {"n": jobs} if "%(n)s" in statement else None)
        conn.execute(f"VACUUM ANALYZE {PAGES_SCHEMA}.jobs")
        states = dict(conn.execute(f"SELECT state::text, count(*) FROM {PAGES_SCHEMA}.jobs GROUP BY 1").fetchall())
        size = conn.execute(f"SELECT pg_size_pretty(pg_total_relation_size('{PAGES_SCHEMA}.jobs'))").fetchone()
    log(f"written in {time.monotonic() - started:.0f} s: {states}")
    results = asyncio.run(time_pages(app, page_paths(jobs), requests))
    app.close()
    return results, {"states": states, "size": size[0] if size else "?"}


# -- (b) a drain with and without an open dashboard --------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OpenDashboard:
    """``python -m currant dashboard`` and a browser's worth of traffic against it."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "CURRANT_DSN": dsn}
        env.pop("CURRANT_DASHBOARD_USER", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "currant", "--schema", schema, "dashboard", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + "/health", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the dashboard did not start") from None
                time.sleep(0.1)  # waiting for the server to listen
        self.stop = threading.Event()
        self.fetches = 0
        self.events = 0
        self.threads = [
            threading.Thread(target=self._events, daemon=True),
            threading.Thread(target=self._refresh, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _events(self) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
            client.stream("GET", self.url + "/events") as response,
        ):
            for line in response.iter_lines():
                if self.stop.is_set():
                    return
                if line == "event: change":
                    self.events += 1
                    client_get(self.url + "/")
                    self.fetches += 1

    def _refresh(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.wait(1.0):  # a person's browser: each page once a second
                for path in ("/", "/jobs"):
                    client.get(self.url + path)
                    self.fetches += 1

    def close(self) -> None:
        self.stop.set()
        self.process.terminate()
        self.process.wait(30)


def client_get(url: str) -> None:
    try:
        httpx.get(url, timeout=10)
    except httpx.HTTPError:
        pass


def drain_once(dsn: str, jobs: int, with_dashboard: bool) -> dict[str, Any]:
    app = fresh_schema(dsn, DRAIN_SCHEMA)
    app.enqueue_many("bench.noop", [()] * jobs)
    app.close()  # no ANALYZE: as in benchmarks/e2e.py, the worker meets the table as a bulk enqueue leaves it
    dashboard = OpenDashboard(dsn, DRAIN_SCHEMA) if with_dashboard else None
    load_before = os.getloadavg()[0]
    try:
        env = {**os.environ, "CURRANT_DSN": dsn, "CURRANT_SCHEMA": DRAIN_SCHEMA}
        proc = subprocess.run(
            [sys.executable, "-m", "currant.worker", "benchmarks.bench_app:app", "--burst"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        fetches = dashboard.fetches if dashboard else 0
        events = dashboard.events if dashboard else 0
        if dashboard is not None:
            dashboard.close()
    match = _WORKER_RATE.search(proc.stderr + proc.stdout)
    if proc.returncode != 0 or match is None or int(match.group(1)) != jobs:
        raise RuntimeError(f"the drain failed: {proc.returncode}\n{proc.stderr[-2000:]}")
    seconds = float(match.group(2))
    return {
        "seconds": seconds,
        "rate": jobs / seconds,
        "fetches": fetches,
        "events": events,
        "load": (load_before, os.getloadavg()[0]),
    }


def bench_drain(dsn: str, jobs: int, pairs: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for pair in range(pairs):
        order = ("without", "with") if pair % 2 == 0 else ("with", "without")
        for side in order:
            run = drain_once(dsn, jobs, side == "with")
            runs[side].append(run)
            log(
                f"pair {pair + 1}, {side} dashboard: {run['seconds']:.2f} s ({run['rate']:,.0f} jobs/s; "
                f"{run['fetches']} page fetches, {run['events']} live events)"
            )
    drop_schema(dsn, DRAIN_SCHEMA)
    medians = {side: statistics.median(r["seconds"] for r in rs) for side, rs in runs.items()}
    pair_ratios = [b["seconds"] / a["seconds"] for a, b in zip(runs["without"], runs["with"], strict=True)]
    return {
        "runs": runs,
        "medians": medians,
        "ratio": medians["with"] / medians["without"],
        "pair_ratio": statistics.median(pair_ratios),
    }


# -- report ------------------------------------------------------------------------


def machine(dsn: str) -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    with psycopg.connect(dsn) as conn:
        server = conn.execute("SHOW server_version").fetchone()
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), Python "
        f"{platform.python_version()}, PostgreSQL {server[0] if server else '?'}, currant core {currant.__impl__}"
    )


def report(
    args: argparse.Namespace,
    pages: list[dict[str, Any]],
    data: dict[str, Any],
    drain: dict[str, Any] | None,
    where: str,
) -> str:
    lines = [
        "# Dashboard benchmark",
        "",
        f"Command: `python benchmarks/dashboard.py --jobs {args.jobs} --requests {args.requests}"
        f" --drain-jobs {args.drain_jobs} --pairs {args.pairs}`",
        "",
        f"Machine: {where}",
        "",
        f"## (a) Server time per page, {args.jobs:,} jobs in the table",
        "",
        f"Jobs by state: {', '.join(f'{k} {v:,}' for k, v in sorted(data['states'].items()))};"
        f" table with indexes {data['size']}. {args.requests} requests per page and mode, in-process"
        " (ASGI, no network). cold = the dashboard's cache cleared before every request.",
        "",
        "| page | cold median | cold p95 | cold max | warm median | warm p95 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in pages:
        c, w = row["cold"], row["warm"]
        lines.append(
            f"| {row['page']} (`{row['path']}`) | {c['median']:.1f} | {c['p95']:.1f} | {c['max']:.1f} |"
            f" {w['median']:.1f} | {w['p95']:.1f} |"
        )
    lines.append("")
    lines.append("All times in ms.")
    if drain is not None:
        lines += [
            "",
            f"## (b) A drain of {args.drain_jobs:,} no-op jobs, without and with an open dashboard",
            "",
            "| pair | without (s) | with (s) | with/without | page fetches during 'with' | live events |"
            " load avg (without; with) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for i, (a, b) in enumerate(zip(drain["runs"]["without"], drain["runs"]["with"], strict=True)):
            lines.append(
                f"| {i + 1} | {a['seconds']:.2f} | {b['seconds']:.2f} | {b['seconds'] / a['seconds']:.3f} |"
                f" {b['fetches']} | {b['events']} | {a['load'][0]:.1f}→{a['load'][1]:.1f};"
                f" {b['load'][0]:.1f}→{b['load'][1]:.1f} |"
            )
        m = drain["medians"]
        lines += [
            "",
            f"Medians: without {m['without']:.2f} s ({args.drain_jobs / m['without']:,.0f} jobs/s), "
            f"with {m['with']:.2f} s ({args.drain_jobs / m['with']:,.0f} jobs/s); "
            f"ratio of the medians {drain['ratio']:.3f} ({(drain['ratio'] - 1) * 100:+.1f} %); median of the"
            f" pairs' ratios {drain['pair_ratio']:.3f} ({(drain['pair_ratio'] - 1) * 100:+.1f} %).",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dsn", default=os.environ.get("CURRANT_DSN"))
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--drain-jobs", type=int, default=500_000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--skip-drain", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not args.dsn:
        parser.error("give --dsn or set CURRANT_DSN")
    where = machine(args.dsn)
    try:
        pages, data = bench_pages(args.dsn, args.jobs, args.requests)
    finally:
        drop_schema(args.dsn, PAGES_SCHEMA)
    drain = None if args.skip_drain else bench_drain(args.dsn, args.drain_jobs, args.pairs)
    text = report(args, pages, data, drain, where)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
