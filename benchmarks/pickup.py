"""Issue 16, target 3: idle pickup, caller's clock to handler, against bare psycopg.

    python benchmarks/pickup.py --dsn DSN [--jobs 200] [--rate 20] [--rounds 3] [--json out.json]

Latency: from ``time.time()`` just before the enqueue call to ``time.time()``
on the handler's first line (same host, same clock). Per round, in
alternating order, each in a fresh database:

* Currant: one serving ``python -m currant.worker benchmarks.bench_pickup_app:app``
  (default options), warmed by one job and left idle; then ``stamp.enqueue``
  of single jobs at ``--rate`` per second on a fixed schedule.
* The floor: psycopg alone. The producer inserts a row and NOTIFYs in one
  transaction; a listener process, LISTENing on its own connection, claims
  with ``FOR UPDATE SKIP LOCKED`` (marking the rows running) on every
  wake-up, stamps each row, and deletes them.
* The same floor on asyncio (``--async-floor``): the listener written with
  psycopg's AsyncConnection, as Currant's worker is. What it loses to the
  floor is what an event loop costs on this path, before anything of
  Currant's own.

Reported: p50 / p90 / p99 / max in ms, medians over the rounds, and the
ratio to the floor's.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import currant
from benchmarks.scratch_db import fresh_database

CHECKOUT = Path(__file__).resolve().parent.parent
LISTENER = """
import sys, time, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
work = psycopg.connect(sys.argv[1], autocommit=True)
conn.execute("LISTEN bench_pickup")
out = open(sys.argv[2], "a")
claim = ("UPDATE t SET state = 1 WHERE id IN (SELECT id FROM t WHERE state = 0 ORDER BY id LIMIT 100"
         " FOR UPDATE SKIP LOCKED) RETURNING id, sent")
print("ready", flush=True)
for _ in conn.notifies():
    rows = work.execute(claim, prepare=True).fetchall()
    for _id, sent in rows:
        out.write(f"{sent!r} {time.time()!r}\\n")
    out.flush()
    if rows:
        work.execute("DELETE FROM t WHERE id = ANY(%s)", ([r[0] for r in rows],), prepare=True)
"""

LISTENER_ASYNC = """
import asyncio, sys, time, psycopg
async def main():
    conn = await psycopg.AsyncConnection.connect(sys.argv[1], autocommit=True)
    work = await psycopg.AsyncConnection.connect(sys.argv[1], autocommit=True)
    await conn.execute("LISTEN bench_pickup")
    out = open(sys.argv[2], "a")
    claim = ("UPDATE t SET state = 1 WHERE id IN (SELECT id FROM t WHERE state = 0 ORDER BY id LIMIT 100"
             " FOR UPDATE SKIP LOCKED) RETURNING id, sent")
    print("ready", flush=True)
    async for _ in conn.notifies():
        rows = await (await work.execute(claim, prepare=True)).fetchall()
        for _id, sent in rows:
            out.write(f"{sent!r} {time.time()!r}\\n")
        out.flush()
        if rows:
            await work.execute("DELETE FROM t WHERE id = ANY(%s)", ([r[0] for r in rows],), prepare=True)
asyncio.run(main())
"""


def wait_lines(path: Path, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.01)
    raise SystemExit(f"{path}: fewer than {n} stamps after {timeout} s")


def on_schedule(jobs: int, rate: float, send: Callable[[float], None]) -> None:
    """``send(caller's clock)`` ``jobs`` times on a fixed schedule."""
    t0 = time.perf_counter()
    for i in range(jobs):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(time.time())


def latencies(path: Path, skip: int) -> list[float]:
    pairs = [line.split() for line in path.read_text().splitlines()[skip:]]
    return sorted((float(ran) - float(sent)) * 1000 for sent, ran in pairs)


def currant_round(dsn: str, jobs: int, rate: float, stamps: Path) -> list[float]:
    target = fresh_database(dsn, "bench_pickup_currant")
    env = {**os.environ, "CURRANT_DSN": target, "CURRANT_SCHEMA": "currant", "BENCH_STAMPS": str(stamps)}
    app = currant.App(target, schema="currant")
    app.migrate()

    def send(now: float) -> None:
        app.enqueue("bench.stamp", (now,))

    worker = subprocess.Popen(
        [sys.executable, "-m", "currant.worker", "benchmarks.bench_pickup_app:app"],
        cwd=CHECKOUT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        send(time.time())  # the warm-up job: the worker is up once it ran
        wait_lines(stamps, 1, 60)
        time.sleep(1.0)  # idle, as the workload asks: its claims and heartbeat done
        on_schedule(jobs, rate, send)
        wait_lines(stamps, jobs + 1, 60)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        app.close()
    return latencies(stamps, 1)


def floor_round(dsn: str, jobs: int, rate: float, stamps: Path, listener_code: str = LISTENER) -> list[float]:
    target = fresh_database(dsn, "bench_pickup_floor")
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE t (id bigserial PRIMARY KEY, state smallint NOT NULL DEFAULT 0, sent float8 NOT NULL)"
        )
        conn.execute("CREATE INDEX t_ready ON t (id) WHERE state = 0")
    listener = subprocess.Popen(
        [sys.executable, "-c", listener_code, target, str(stamps)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        with psycopg.connect(target) as conn:

            def send(now: float) -> None:
                with conn.transaction():
                    conn.execute("INSERT INTO t (sent) VALUES (%s)", (now,), prepare=True)
                    conn.execute("NOTIFY bench_pickup")

            send(time.time())
            wait_lines(stamps, 1, 60)
            time.sleep(1.0)
            on_schedule(jobs, rate, send)
        wait_lines(stamps, jobs + 1, 60)
    finally:
        listener.kill()
        listener.wait()
    return latencies(stamps, 1)


def summary(values: list[float]) -> dict[str, float]:
    def pct(q: float) -> float:
        return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": values[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--async-floor", action="store_true", help="also the floor's listener on asyncio")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"floor": [], "currant": []}
    kinds: dict[str, Callable[[str, int, float, Path], list[float]]] = {"floor": floor_round, "currant": currant_round}
    if args.async_floor:
        runs["floor_async"] = []
        kinds["floor_async"] = functools.partial(floor_round, listener_code=LISTENER_ASYNC)
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for label in list(kinds) if round_ % 2 == 0 else reversed(list(kinds)):
                stamps = Path(scratch) / f"{label}-{round_}.txt"
                result = summary(kinds[label](args.dsn, args.jobs, args.rate, stamps))
                runs[label].append(result)
                print(
                    f"round {round_ + 1}/{args.rounds} {label}: p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms",
                    file=sys.stderr,
                )
    report: dict[str, Any] = {"command": " ".join(sys.argv), "runs": runs, "median": {}}
    for metric in ("p50", "p90", "p99", "max"):
        medians = {label: statistics.median(r[metric] for r in results) for label, results in runs.items()}
        report["median"][metric] = medians
        floor, mine = medians["floor"], medians["currant"]
        line = f"{metric:<4} floor {floor:7.2f} ms  currant {mine:7.2f} ms  {mine / floor:.2f}x the floor"
        if "floor_async" in medians:
            on_loop = medians["floor_async"]
            line += f"  (floor on asyncio {on_loop:7.2f} ms, {on_loop / floor:.2f}x; currant {mine / on_loop:.2f}x it)"
        print(line)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
