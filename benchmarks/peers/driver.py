"""One system, one workload, one run: ``python -m benchmarks.peers.driver SYSTEM WORKLOAD ...``.

``run.py`` starts this in the system's own interpreter (Currant's dev venv for
Currant and the floor, the peers' venv for everyone else), so each side
imports only its own libraries. It prints one JSON object on stdout:
``{"ok": bool, "problems": [...], "metrics": {...}, "details": {...}}``.

Every system is driven the same way:

* **drain**: fresh state; N jobs by the system's bulk API (timed); then one
  worker command is spawned and the clock runs until the ledger (see
  ``ledger.py``) holds N entries. A worker with a burst mode exits by itself;
  the others get SIGTERM then. The ledger is read back: every id exactly once,
  or the run is FAILED.
* **pickup**: a serving worker, warmed by one job; then single enqueues at a
  fixed 50 jobs/s schedule; each handler records start time minus the
  ``time.time()`` stamped into its arguments at enqueue.
* **sustained**: the same serving worker, offered 100 / 1,000 / 10,000 jobs/s
  in 10 ms ticks (a tick's jobs go by the bulk API when there are several),
  until the achieved rate falls below 90 % of the offered one (saturation).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.peers.ledger import LEDGER_KEY, Resp

Item = tuple[int, float]
POLL = 0.01  # ledger poll interval while waiting for a drain
BIN = Path(sys.executable).parent


def log(message: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of sorted values."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# -- state per run ---------------------------------------------------------------------


class FreshDatabase:
    """A new PostgreSQL database for one run, dropped afterwards (as e2e.py does)."""

    def __init__(self, base_dsn: str, tag: str) -> None:
        import psycopg
        from psycopg.conninfo import make_conninfo

        self.base_dsn = base_dsn
        self.name = f"peers_{tag}_{os.getpid()}"
        with psycopg.connect(base_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{self.name}"')
        self.dsn = make_conninfo(base_dsn, dbname=self.name)
        # asyncpg takes URLs only, so hand the workers a URL form as well.
        params = psycopg.conninfo.conninfo_to_dict(self.dsn)
        auth = params.get("user", "postgres") + (f":{params['password']}" if params.get("password") else "")
        self.url = f"postgresql://{auth}@{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/{self.name}"

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.base_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@dataclass
class Config:
    pg_dsn: str
    redis_url: str
    currant_concurrency: int
    celery_concurrency: int
    dramatiq_processes: int
    dramatiq_threads: int
    pgqueuer_batch: int
    procrastinate_concurrency: int
    rq_worker_class: str


class System:
    """How the harness drives one queue. Subclasses fill in the blanks."""

    name = "?"
    uses_pg = False
    burst = False  # the worker command exits by itself once the queue is empty

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.db: FreshDatabase | None = None

    def setup(self) -> None:
        """Fresh state, warm producer connection: what enqueue timing must not include."""

    def teardown(self) -> None:
        if self.db is not None:
            self.db.drop()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["PEERS_REDIS_URL"] = self.cfg.redis_url
        if self.db is not None:
            env["PEERS_PG_DSN"] = self.db.url
        return env

    def worker_cmd(self, burst: bool) -> list[str]:
        raise NotImplementedError

    def enqueue_many(self, items: list[Item]) -> None:
        raise NotImplementedError

    def enqueue_one(self, item: Item) -> None:
        self.enqueue_many([item])

    def check_store(self, n: int) -> dict[str, Any]:
        """The system's own view after a drain (informational, where cheap)."""
        return {}

    def version(self) -> str:
        return "?"


class CurrantSystem(System):
    name = "currant"
    uses_pg = True
    burst = True

    def setup(self) -> None:
        import currant

        self.db = FreshDatabase(self.cfg.pg_dsn, self.name)
        self.app = currant.App(self.db.dsn, schema="bench_peers")
        self.task = self.app.task(name="bench.noop")(_stub)
        self.app.migrate()
        self.app.get_job(1)  # opens the pool: enqueue timing is the COPY alone

    def teardown(self) -> None:
        self.app.close()
        super().teardown()

    def env(self) -> dict[str, str]:
        env = super().env()
        assert self.db is not None
        env["CURRANT_DSN"] = self.db.dsn
        env["CURRANT_SCHEMA"] = "bench_peers"
        return env

    def worker_cmd(self, burst: bool) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "currant.worker",
            "benchmarks.peers.apps.currant_app:app",
            "--concurrency",
            str(self.cfg.currant_concurrency),
        ]
        return cmd + (["--burst"] if burst else [])

    def enqueue_many(self, items: list[Item]) -> None:
        self.task.enqueue_many(items)

    def enqueue_one(self, item: Item) -> None:
        self.task.enqueue(*item)

    def check_store(self, n: int) -> dict[str, Any]:
        import psycopg

        assert self.db is not None
        with psycopg.connect(self.db.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded' AND attempts = 1) FROM bench_peers.jobs"
            ).fetchone()
        assert row is not None
        return {"jobs": row[0], "succeeded_first_attempt": row[1]}

    def version(self) -> str:
        import currant

        return f"{getattr(currant, '__version__', 'dev')} (core {getattr(currant, '__impl__', '?')})"


def _stub(i: int, t: float) -> None:
    """Producer-side stand-in for the worker's handler (only its name is used)."""


class RedisSystem(System):
    def setup(self) -> None:
        conn = Resp(self.cfg.redis_url)
        conn.call("FLUSHDB")  # the benchmark's own Redis database (--redis-url): broker state of earlier runs
        conn.close()


class CelerySystem(RedisSystem):
    name = "celery"

    def setup(self) -> None:
        super().setup()
        os.environ["PEERS_REDIS_URL"] = self.cfg.redis_url
        from benchmarks.peers.apps import celery_app

        self.mod = celery_app
        # Open the broker connection and declare the queue before timing starts.
        with self.mod.app.producer_or_acquire() as producer:
            self.mod.noop.apply_async((-1, 0.0), producer=producer, queue="warmup")
        Resp(self.cfg.redis_url).call("DEL", "warmup")

    def worker_cmd(self, burst: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "benchmarks.peers.apps.celery_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(self.cfg.celery_concurrency),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def enqueue_many(self, items: list[Item]) -> None:
        # Celery has no bulk enqueue; one pooled producer for the whole batch
        # (what group().apply_async() does internally) is its fastest path.
        noop = self.mod.noop
        with self.mod.app.producer_or_acquire() as producer:
            for item in items:
                noop.apply_async(item, producer=producer)

    def enqueue_one(self, item: Item) -> None:
        self.mod.noop.apply_async(item)

    def version(self) -> str:
        import celery
        import kombu
        import redis

        return f"celery {celery.__version__}, kombu {kombu.__version__}, redis-py {redis.__version__}"


class RQSystem(RedisSystem):
    name = "rq"
    burst = True

    def setup(self) -> None:
        super().setup()
        from redis import Redis
        from rq import Queue

        self.redis = Redis.from_url(self.cfg.redis_url)
        self.queue = Queue("default", connection=self.redis)
        self.redis.ping()

    def env(self) -> dict[str, str]:
        env = super().env()
        if not self.cfg.rq_worker_class.endswith("SimpleWorker"):
            env["PEERS_LEDGER_SYNC"] = "1"
        return env

    def worker_cmd(self, burst: bool) -> list[str]:
        return [
            str(BIN / "rq"),
            "worker",
            "--url",
            self.cfg.redis_url,
            "--logging_level",
            "WARNING",
            "--worker-class",
            self.cfg.rq_worker_class,
            *(["--burst"] if burst else []),
            "default",
        ]

    def enqueue_many(self, items: list[Item]) -> None:
        from rq import Queue

        # enqueue_many pipelines the whole batch in one round trip (RQ's bulk API).
        self.queue.enqueue_many(
            [Queue.prepare_data("benchmarks.peers.apps.rq_app.noop", args=item, result_ttl=0) for item in items]
        )

    def enqueue_one(self, item: Item) -> None:
        self.queue.enqueue("benchmarks.peers.apps.rq_app.noop", *item, result_ttl=0)

    def version(self) -> str:
        import redis
        import rq

        return f"rq {rq.__version__}, redis-py {redis.__version__}"


class DramatiqSystem(RedisSystem):
    name = "dramatiq"

    def setup(self) -> None:
        super().setup()
        os.environ["PEERS_REDIS_URL"] = self.cfg.redis_url
        from benchmarks.peers.apps import dramatiq_app

        self.mod = dramatiq_app
        self.mod.broker.client.ping()

    def worker_cmd(self, burst: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "dramatiq",
            "benchmarks.peers.apps.dramatiq_app",
            "--processes",
            str(self.cfg.dramatiq_processes),
            "--threads",
            str(self.cfg.dramatiq_threads),
        ]

    def enqueue_many(self, items: list[Item]) -> None:
        # No bulk API on the Redis broker: group().run() is this same loop.
        send = self.mod.noop.send
        for item in items:
            send(*item)

    def version(self) -> str:
        import dramatiq
        import redis

        return f"dramatiq {dramatiq.__version__}, redis-py {redis.__version__}"


class PgQueuerSystem(System):
    name = "pgqueuer"
    uses_pg = True
    burst = True

    def setup(self) -> None:
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        self.db = FreshDatabase(self.cfg.pg_dsn, self.name)
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(self.db.url))
        self.queries = Queries(AsyncpgDriver(self.conn))
        self.loop.run_until_complete(self.queries.install())

    def teardown(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()
        super().teardown()

    def worker_cmd(self, burst: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "benchmarks.peers.apps.pgqueuer_app",
            "--batch-size",
            str(self.cfg.pgqueuer_batch),
            "--mode",
            "drain" if burst else "continuous",
        ]

    def enqueue_many(self, items: list[Item]) -> None:
        # List arguments: one INSERT ... SELECT unnest(...) statement for the batch.
        payloads: list[bytes | None] = [f"{i} {t!r}".encode() for i, t in items]
        self.loop.run_until_complete(self.queries.enqueue(["noop"] * len(items), payloads, [0] * len(items)))

    def enqueue_one(self, item: Item) -> None:
        i, t = item
        self.loop.run_until_complete(self.queries.enqueue("noop", f"{i} {t!r}".encode()))

    def version(self) -> str:
        from importlib.metadata import version

        return f"pgqueuer {version('pgqueuer')}, asyncpg {version('asyncpg')}"


class ProcrastinateSystem(System):
    name = "procrastinate"
    uses_pg = True
    burst = True

    def setup(self) -> None:
        self.db = FreshDatabase(self.cfg.pg_dsn, self.name)
        os.environ["PEERS_PG_DSN"] = self.db.url
        from benchmarks.peers.apps import procrastinate_app

        self.mod = procrastinate_app
        self.app = self.mod.app.open()
        self.app.schema_manager.apply_schema()

    def teardown(self) -> None:
        self.app.close()
        super().teardown()

    def worker_cmd(self, burst: bool) -> list[str]:
        return [
            str(BIN / "procrastinate"),
            "--app=benchmarks.peers.apps.procrastinate_app.app",
            "worker",
            "--concurrency",
            str(self.cfg.procrastinate_concurrency),
            *(["--one-shot"] if burst else []),
        ]

    def enqueue_many(self, items: list[Item]) -> None:
        self.mod.noop.batch_defer(*({"i": i, "t": t} for i, t in items))

    def enqueue_one(self, item: Item) -> None:
        self.mod.noop.defer(i=item[0], t=item[1])

    def check_store(self, n: int) -> dict[str, Any]:
        import psycopg

        assert self.db is not None
        with psycopg.connect(self.db.dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1").fetchall()
        return {"by_status": dict(rows)}

    def version(self) -> str:
        from importlib.metadata import version

        return f"procrastinate {version('procrastinate')}, psycopg {version('psycopg')}"


SYSTEMS: dict[str, type[System]] = {
    cls.name: cls
    for cls in (CurrantSystem, CelerySystem, RQSystem, DramatiqSystem, PgQueuerSystem, ProcrastinateSystem)
}


# -- the ledger, from the harness side ----------------------------------------------------------


class Ledger:
    def __init__(self, url: str) -> None:
        self.conn = Resp(url)
        self.conn.call("DEL", LEDGER_KEY)

    def size(self) -> int:
        value = self.conn.call("LLEN", LEDGER_KEY)
        assert isinstance(value, int)
        return value

    def entries(self) -> list[str]:
        raw = self.conn.call("LRANGE", LEDGER_KEY, 0, -1)
        assert isinstance(raw, list)
        return [e.decode() for e in raw]

    def reset(self) -> None:
        self.conn.call("DEL", LEDGER_KEY)


def check_exactly_once(entries: list[str], expected: range) -> dict[str, int]:
    counts = Counter(int(e.split(":", 1)[0]) for e in entries)
    want = set(expected)
    return {
        "recorded": len(entries),
        "distinct": len(counts),
        "missing": sum(1 for i in want if i not in counts),
        "duplicated": sum(c - 1 for i, c in counts.items() if c > 1),
        "unexpected": sum(1 for i in counts if i not in want),
    }


# -- workloads ---------------------------------------------------------------------------------


@dataclass
class Result:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)
        log(f"FAILED: {problem}")


class Worker:
    """A worker subprocess; its stderr goes to a file so a chatty worker cannot block on a pipe."""

    def __init__(self, cmd: list[str], env: dict[str, str], logdir: Path, tag: str) -> None:
        self.log_path = logdir / f"{tag}.log"
        self.log_file = self.log_path.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True
        )

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the worker and its pool children
                self.proc.wait()
        else:
            # Pool children of a worker that exited are no longer ours to wait for, but must not linger.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.log_file.close()
        return self.proc.returncode

    def tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").strip().splitlines()[-8:])
        except OSError:
            return ""


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = POLL) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def drain(system: System, ledger: Ledger, n: int, timeout: float, logdir: Path, tag: str) -> Result:
    result = Result()
    items = [(i, 0.0) for i in range(n)]
    log(f"{system.name}: enqueue {n:,} jobs (bulk)")
    started = time.perf_counter()
    system.enqueue_many(items)
    enqueue_s = time.perf_counter() - started
    result.metrics["enqueue_s"] = enqueue_s
    result.metrics["enqueue_jobs_per_s"] = n / enqueue_s

    log(f"{system.name}: drain by one worker command")
    worker = Worker(system.worker_cmd(burst=True), system.env(), logdir, f"{tag}-drain")
    first: float | None = None
    done: float | None = None
    deadline = time.monotonic() + timeout
    last_report = time.monotonic()
    while time.monotonic() < deadline:
        size = ledger.size()
        now = time.perf_counter()
        if size and first is None:
            first = now
        if size >= n:
            done = now
            break
        if worker.exited() and size < n:
            time.sleep(2 * 0.05 + 0.2)  # its last ledger flush may still be in flight
            if ledger.size() < n:
                break
        if time.monotonic() - last_report > 10:
            log(f"{system.name}: {size:,}/{n:,} jobs ran so far")
            last_report = time.monotonic()
        time.sleep(POLL)
    if done is None:
        result.fail(
            f"not drained: {ledger.size():,} of {n:,} recorded"
            f" ({'worker exited ' + str(worker.proc.returncode) if worker.exited() else 'timed out'})"
            f"; worker log tail: {worker.tail()}"
        )
    if system.burst and done is not None:
        wait_until(worker.exited, 60, 0.02)
        exit_s = time.perf_counter() - worker.started
        result.metrics["drain_to_exit_s"] = exit_s
    rc = worker.stop()
    time.sleep(0.2)  # a late duplicate would be flushed within the ledger's interval
    if system.burst and rc != 0:
        result.fail(f"burst worker exited {rc}: {worker.tail()}")
    check = check_exactly_once(ledger.entries(), range(n))
    result.details["ledger"] = check
    if check["missing"] or check["duplicated"] or check["unexpected"]:
        result.fail(f"exactly-once check: {check}")
    if done is not None:
        drain_s = done - worker.started
        result.metrics["drain_s"] = drain_s
        result.metrics["drain_jobs_per_s"] = n / drain_s
        result.metrics["e2e_jobs_per_s"] = n / (enqueue_s + drain_s)
        if first is not None:
            result.metrics["startup_s"] = first - worker.started
            result.metrics["drain_steady_jobs_per_s"] = n / max(done - first, 1e-9)
    result.details["store"] = system.check_store(n)
    return result


def warm_worker(system: System, ledger: Ledger, logdir: Path, tag: str) -> Worker:
    """A serving worker that has run one job, so start-up is not counted as latency."""
    worker = Worker(system.worker_cmd(burst=False), system.env(), logdir, tag)
    system.enqueue_one((-1, 0.0))
    if not wait_until(lambda: ledger.size() >= 1, 120):
        worker.stop()
        raise RuntimeError(f"{system.name}: the worker never ran the warm-up job: {worker.tail()}")
    time.sleep(1.0)  # idle now: whatever the worker does when nothing is ready
    ledger.reset()
    return worker


def parse_latencies(entries: list[str], ids: range) -> tuple[dict[int, float], dict[str, int]]:
    latency = {}
    for e in entries:
        i, _, ms = e.partition(":")
        if ms:
            latency[int(i)] = float(ms)
    return latency, check_exactly_once(entries, ids)


def pickup(system: System, ledger: Ledger, jobs: int, rate: float, logdir: Path, tag: str) -> Result:
    result = Result()
    log(f"{system.name}: idle pickup, {jobs} single enqueues at {rate:.0f} jobs/s")
    worker = warm_worker(system, ledger, logdir, f"{tag}-pickup")
    try:
        t0 = time.perf_counter()
        for i in range(jobs):
            # A fixed schedule, not a sleep after each call, so enqueue time does not stretch it.
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            system.enqueue_one((i, time.time()))
        if not wait_until(lambda: ledger.size() >= jobs, 60):
            result.fail(f"pickup: {ledger.size()} of {jobs} jobs ran within 60 s")
    finally:
        worker.stop()
    time.sleep(0.2)
    latency, check = parse_latencies(ledger.entries(), range(jobs))
    result.details["ledger"] = check
    if check["missing"] or check["duplicated"] or check["unexpected"]:
        result.fail(f"pickup exactly-once check: {check}")
    values = sorted(latency.values())
    for q in (50, 90, 99):
        result.metrics[f"pickup_p{q}_ms"] = percentile(values, q)
    result.metrics["pickup_max_ms"] = values[-1] if values else float("nan")
    return result


def sustained(system: System, ledger: Ledger, rates: list[int], seconds: float, logdir: Path, tag: str) -> Result:
    result = Result()
    worker = warm_worker(system, ledger, logdir, f"{tag}-sustained")
    tick = 0.01
    levels: list[dict[str, Any]] = []
    try:
        for rate in rates:
            log(f"{system.name}: sustained, offered {rate:,} jobs/s for {seconds:.0f} s")
            ledger.reset()
            stamps: dict[int, float] = {}
            sent = 0
            t0 = time.perf_counter()
            wall0 = time.time()
            end = t0 + seconds
            next_tick = t0
            while True:
                now = time.perf_counter()
                if now >= end:
                    break
                due = min(int(rate * (now - t0)) + 1, int(rate * seconds)) - sent
                if due > 0:
                    stamp = time.time()
                    batch = [(sent + k, stamp) for k in range(due)]
                    if due == 1:
                        system.enqueue_one(batch[0])
                    else:
                        system.enqueue_many(batch)
                    for i, _ in batch:
                        stamps[i] = stamp
                    sent += due
                next_tick += tick
                delay = next_tick - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            send_s = time.perf_counter() - t0
            finished = wait_until(lambda total=sent: ledger.size() >= total, max(30.0, seconds * 3), 0.05)
            latency, check = parse_latencies(ledger.entries(), range(sent))
            ran = sorted(latency)
            starts = [stamps[i] + latency[i] / 1000 for i in ran if i in stamps]
            span = (max(starts) - wall0) if starts else float("nan")
            values = sorted(latency.values())
            level = {
                "offered_per_s": rate,
                "enqueued": sent,
                "enqueue_rate_per_s": sent / send_s,
                "ran": check["distinct"],
                "achieved_per_s": check["distinct"] / span if starts else 0.0,
                "p50_ms": percentile(values, 50),
                "p99_ms": percentile(values, 99),
                "check": check,
                "finished": finished,
            }
            levels.append(level)
            log(
                f"{system.name}: offered {rate:,}/s: enqueued {level['enqueue_rate_per_s']:,.0f}/s,"
                f" achieved {level['achieved_per_s']:,.0f}/s, p50 {level['p50_ms']:.1f} ms, p99 {level['p99_ms']:.1f} ms"
            )
            if check["duplicated"] or check["unexpected"] or (finished and check["missing"]):
                result.fail(f"sustained {rate}/s exactly-once check: {check}")
            if not finished or level["achieved_per_s"] < 0.9 * rate:
                level["saturated"] = True
                break
    finally:
        worker.stop()
    result.details["levels"] = levels
    for level in levels:
        r = level["offered_per_s"]
        result.metrics[f"sustained_{r}_achieved_per_s"] = level["achieved_per_s"]
        result.metrics[f"sustained_{r}_p50_ms"] = level["p50_ms"]
        result.metrics[f"sustained_{r}_p99_ms"] = level["p99_ms"]
    return result


FLOORS = ("floor", "floor_guarded")


def floor(pg_dsn: str, n: int, guarded: bool) -> Result:
    from benchmarks.floor import run_floor

    result = Result()
    db = FreshDatabase(pg_dsn, "floor")
    try:
        log(f"floor: COPY + SKIP LOCKED drain of {n:,} rows (psycopg alone{', planner-guarded' if guarded else ''})")
        out = run_floor(db.dsn, n, guarded=guarded)
    finally:
        db.drop()
    if not out["ok"]:
        result.fail(f"floor drained {out['drained']} of {n}")
    result.metrics["enqueue_jobs_per_s"] = out["insert_jobs_per_s"]
    result.metrics["drain_jobs_per_s"] = out["drain_jobs_per_s"]
    result.metrics["e2e_jobs_per_s"] = n / (out["insert_s"] + out["drain_s"])
    result.details["floor"] = out
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One system, one workload (run.py drives this).")
    parser.add_argument("system", choices=[*SYSTEMS, *FLOORS])
    parser.add_argument("workload", choices=["drain", "pickup", "sustained", "version"])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--rates", default="100,1000,10000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--logdir", type=Path, default=Path("/tmp"))
    parser.add_argument("--tag", default="run")
    parser.add_argument("--config", required=True, help="JSON of Config")
    args = parser.parse_args(argv)
    cfg = Config(**json.loads(args.config))

    if args.system in FLOORS:
        if args.workload == "version":
            import psycopg

            print(json.dumps({"version": f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__})"}))
            return 0
        out = floor(cfg.pg_dsn, args.jobs, guarded=args.system == "floor_guarded")
        print(json.dumps(asdict(out)))
        return 0 if out.ok else 1

    system = SYSTEMS[args.system](cfg)
    if args.workload == "version":
        print(json.dumps({"version": system.version()}))
        return 0
    args.logdir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(cfg.redis_url)
    system.setup()
    try:
        if args.workload == "drain":
            out = drain(system, ledger, args.jobs, args.timeout, args.logdir, args.tag)
        elif args.workload == "pickup":
            out = pickup(system, ledger, args.jobs, args.rate, args.logdir, args.tag)
        else:
            rates = [int(r) for r in args.rates.split(",")]
            out = sustained(system, ledger, rates, args.seconds, args.logdir, args.tag)
    except Exception as exc:  # noqa: BLE001 - reported as a FAILED run, never as a number
        out = Result()
        out.fail(f"{type(exc).__name__}: {exc}")
    finally:
        ledger.reset()
        system.teardown()
    print(json.dumps(asdict(out)))
    return 0 if out.ok else 1


if __name__ == "__main__":
    sys.exit(main())
