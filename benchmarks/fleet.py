"""Many worker processes on one PostgreSQL, direct and through PgBouncer (issue 17).

    PYTHONPATH=. python benchmarks/fleet.py --dsn DSN [--workers 1,4,16,32] [--via direct,pgbouncer]
        [--jobs N] [--pickup-jobs M] [--json PATH]

W worker processes run as H simulated hosts, each ``python -m currant.worker
--processes P`` in a process group of its own (as separate hosts would be):
W = 1 and 4 are one host; 16 and 32 are hosts of 8 processes. ``--lone`` adds
rows where every process is a host of its own (W lone workers, each with its
own LISTEN: the layout where a NOTIFY still wakes every process).

Per (via, W), each in a fresh database:

* idle pickup: once the fleet is up (registered, listening, every process's
  first claim made), M single ``enqueue()`` at 20 jobs/s; latency
  ``started_at - enqueued_at`` (database clock); claims per job and empty
  claims per NOTIFY (each job is one NOTIFY) from the hosts' ``/metrics``
  (``currant_claims_total``, ``currant_empty_claims_total``) before and
  after; backends held (``pg_stat_activity``; through PgBouncer, its server
  pool, shared with the producer, plus the supervisors' direct LISTEN);
* drain: N no-op jobs enqueued, then the fleet with ``--burst``; throughput on
  the database clock (first claim to last completion) and by wall clock from
  spawn to the last exit; every job must have succeeded with attempts = 1.

Through PgBouncer (Debian's, transaction mode, started here: tests/pgbouncer.py)
the fleet runs with ``--transaction-pooling`` and ``--listen-dsn`` (direct),
so the supervisors' LISTEN still wakes it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

import currant
from benchmarks.e2e import fresh_target, machine_info, percentile, worker_env

REPO = Path(__file__).resolve().parent.parent
APP = "benchmarks.bench_app:app"
PICKUP_RATE = 20.0
_EXIT = re.compile(r"(\d+) jobs processed in .*? jobs/s, (\d+) claims, (\d+) empty\)")


def log(message: str) -> None:
    print(f"[fleet {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def layout(workers: int, lone: bool) -> list[int]:
    """Processes per simulated host."""
    if lone:
        return [1] * workers
    if workers <= 8:
        return [workers]
    return [8] * (workers // 8)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Fleet:
    """H hosts, each a worker command in its own process group, each serving
    its processes' metrics (summed by its supervisor) on a port of its own."""

    def __init__(self, hosts: list[int], env: dict[str, str], extra: list[str]) -> None:
        self.logs: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        directory = Path(os.environ.get("TMPDIR", "/tmp"))
        for n, processes in enumerate(hosts):
            path = directory / f"currant-fleet-{os.getpid()}-{n}.log"
            port = _free_port()
            self.ports.append(port)
            command = [sys.executable, "-m", "currant.worker", APP, *extra]
            command += ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
            if processes > 1:
                command += ["--processes", str(processes)]
            with open(path, "wb") as out:
                proc = subprocess.Popen(
                    command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            self.procs.append(proc)
            self.logs.append(path)

    def counters(self) -> tuple[float, float]:
        """(claims that found jobs, empty claims), summed over the hosts' /metrics."""
        found = empty = 0.0
        for port in self.ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                text = response.read().decode()
            found += sum(float(v) for v in re.findall(r"^currant_claims_total (\S+)$", text, re.MULTILINE))
            empty += sum(float(v) for v in re.findall(r"^currant_empty_claims_total (\S+)$", text, re.MULTILINE))
        return found, empty

    def stop(self, timeout: float = 60) -> tuple[int, int, int]:
        """SIGTERM every host and wait: (jobs, claims, empty claims) from the exit lines."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> tuple[int, int, int]:
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.wait(max(0.1, deadline - time.monotonic()))
        jobs = claims = empty = 0
        for path in self.logs:
            for match in _EXIT.finditer(path.read_text(errors="replace")):
                jobs, claims, empty = jobs + int(match[1]), claims + int(match[2]), empty + int(match[3])
            path.unlink()
        return jobs, claims, empty


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)  # the polling interval of this wait


def sessions(conn: psycopg.Connection[Any], pooled: bool) -> int:
    """Backends of this database the fleet costs: the workers' own, or through
    PgBouncer every one but ours (its server pool, shared with the producer,
    plus the supervisors' direct LISTEN connections)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    if not pooled:
        query += " AND application_name = 'currant-worker'"
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def ready(conn: psycopg.Connection[Any], app: currant.App, workers: int, hosts: int) -> bool:
    """Every process registered, and every host holding its slot (it takes turns
    at "jobs ready" from then on: currant.worker.turns)."""
    row = conn.execute(f'SELECT count(*) FROM "{app.schema}".workers').fetchone()
    slots = conn.execute(app.sql["host_slots"]).fetchone()
    return bool(row and row[0] == workers and slots and len(slots[0] or ()) == hosts)


def run_case(base_dsn: str, via: str, workers: int, lone: bool, args: argparse.Namespace, n: int) -> dict[str, Any]:
    from tests.pgbouncer import PgBouncer

    hosts = layout(workers, lone)
    result: dict[str, Any] = {"via": via, "workers": workers, "hosts": len(hosts), "layout": hosts}
    with fresh_target(base_dsn, n) as (dsn, schema):
        app = currant.App(dsn, schema=schema)
        app.migrate()
        bouncer = PgBouncer(dsn, pool_size=args.pool_size) if via == "pgbouncer" else None
        env = worker_env(bouncer.dsn() if bouncer else dsn, schema)
        extra = ["--heartbeat", "5", "--poll-interval", str(args.poll_interval)]
        if bouncer is not None:
            extra += ["--transaction-pooling"]
            env["CURRANT_LISTEN_DSN"] = dsn
        producer = currant.App(bouncer.dsn(), schema=schema, transaction_pooling=True) if bouncer else app
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                # 1. idle pickup at low load, once every process has made
                # its first (empty) claim
                fleet = Fleet(hosts, env, extra)
                wait_until(lambda: ready(conn, app, workers, len(hosts)), 120, "the fleet registered and in turn")
                wait_until(lambda: fleet.counters()[1] >= workers, 60, "every process's first claim")
                result["backends"] = sessions(conn, bouncer is not None)
                found0, empty0 = fleet.counters()
                ids = []
                t0 = time.perf_counter()
                for i in range(args.pickup_jobs):
                    delay = t0 + i / PICKUP_RATE - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)  # the offered load's schedule
                    ids.append(producer.enqueue("bench.noop"))
                done = f"SELECT count(*) FROM \"{schema}\".jobs WHERE id = ANY(%s) AND state = 'succeeded'"
                wait_until(lambda: conn.execute(done, (ids,)).fetchone()[0] == len(ids), 60, "pickup jobs")  # type: ignore[index]
                found1, empty1 = fleet.counters()
                fleet.stop()
                rows = conn.execute(
                    f'SELECT extract(epoch FROM started_at - enqueued_at) * 1000 FROM "{schema}".jobs'
                    " WHERE id = ANY(%s)",
                    (ids,),
                ).fetchall()
                latencies = sorted(float(r[0]) for r in rows)
                m = len(ids)
                result.update(
                    pickup_p50_ms=percentile(latencies, 50),
                    pickup_p99_ms=percentile(latencies, 99),
                    claims_per_job=(found1 - found0 + empty1 - empty0) / m,
                    empty_claims_per_notify=(empty1 - empty0) / m,
                )
                conn.execute(f'DELETE FROM "{schema}".jobs')
                conn.execute(f'DELETE FROM "{schema}".workers')
                # 2. drain
                producer.enqueue_many("bench.noop", [()] * args.jobs)
                started = time.perf_counter()
                fleet = Fleet(hosts, env, [*extra, "--burst"])
                processed, _, _ = fleet.wait(600)
                wall = time.perf_counter() - started
                row = conn.execute(
                    f"SELECT count(*) FILTER (WHERE state = 'succeeded' AND attempts = 1),"
                    f' extract(epoch FROM max(finished_at) - min(started_at)) FROM "{schema}".jobs'
                ).fetchone()
                assert row is not None
                ok, span = int(row[0]), float(row[1] or 0)
                result.update(
                    drain_jobs=args.jobs,
                    drain_ok=ok == args.jobs and processed == args.jobs,
                    drain_db_jobs_per_s=args.jobs / span if span else 0.0,
                    drain_wall_jobs_per_s=args.jobs / wall,
                )
        finally:
            if producer is not app:
                producer.close()
            app.close()
            if bouncer is not None:
                bouncer.close()
    log(json.dumps(result))
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        "| via | workers (hosts) | backends | drain jobs/s (DB clock) | drain jobs/s (wall, incl. start-up) |"
        " pickup p50 / p99 ms | claims per job | empty claims per NOTIFY |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        hosts = f"{r['workers']} ({r['hosts']} host{'s' if r['hosts'] > 1 else ''})"
        flag = "" if r.get("drain_ok") else " FAILED"
        backends = r["backends"] if r["via"] == "direct" else f"{r['backends']} (pool + LISTEN)"
        print(
            f"| {r['via']} | {hosts} | {backends} | {r['drain_db_jobs_per_s']:,.0f}{flag} |"
            f" {r['drain_wall_jobs_per_s']:,.0f} | {r['pickup_p50_ms']:.1f} / {r['pickup_p99_ms']:.1f} |"
            f" {r['claims_per_job']:.2f} | {r['empty_claims_per_notify']:.2f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("CURRANT_DSN"), required=not os.environ.get("CURRANT_DSN"))
    parser.add_argument("--workers", default="1,4,16,32", help="worker process counts (default: 1,4,16,32)")
    parser.add_argument("--via", default="direct,pgbouncer", help="direct, pgbouncer or both (default: both)")
    parser.add_argument("--lone", default="", help="worker counts to run also as lone processes, e.g. 16")
    parser.add_argument("--jobs", type=int, default=50_000, help="jobs per drain (default: 50000)")
    parser.add_argument("--pickup-jobs", type=int, default=40, help="single enqueues at 20/s (default: 40)")
    parser.add_argument("--pool-size", type=int, default=20, help="PgBouncer default_pool_size (default: 20)")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="the workers' fallback poll (default: 1); every idle process polls that often, whatever the load",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    cases = [(via, int(w), False) for via in args.via.split(",") for w in args.workers.split(",")]
    cases += [("direct", int(w), True) for w in args.lone.split(",") if w]
    results = [run_case(args.dsn, via, w, lone, args, n) for n, (via, w, lone) in enumerate(cases)]
    for result, (_, _, lone) in zip(results, cases, strict=True):
        result["lone"] = lone
    print_table(results)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": machine_info(args.dsn), "args": vars(args) | {"json": str(args.json)}, "results": results},
                indent=2,
                default=str,
            )
        )
    return 0 if all(r.get("drain_ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
