"""Claim + complete round trip of 1,000 jobs, with the statements the worker sends.

Run: ``CURRANT_TEST_DSN=postgresql://... python -m pytest benchmarks/test_bench_roundtrip.py
-p no:cacheprovider --benchmark-only``.

One round = ``claim`` (limit 1000) then ``complete_succeeded`` (or, as a
worker with ``--keep-succeeded 0`` sends it, ``complete_succeeded_discarding``)
for every claimed id, each its own autocommit transaction and prepared, exactly as
``currant.worker.completer`` sends them without the pipeline. Enqueueing the 1,000
jobs is the round's untimed setup, so the backlog stays constant. Table states:

* ``fresh``: an empty schema, never analyzed (the first minute of a queue);
* ``history100k``: 100,000 succeeded jobs retained (``keep_succeeded``
  defaults to a day), table ANALYZEd, as autovacuum leaves it;
* ``backlog100k``: 100,000 queued jobs, table ANALYZEd while they wait, as
  autovacuum does soon after a bulk ``enqueue_many`` (the jobs table analyzes
  at 2 % change). With those statistics the planner joins the claimed ids back
  to the table by hashing a sequential scan of all of it, on every claim;
  this case keeps that visible.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

import currant
from currant.sql import queries
from currant.worker.arrays import register_array_dumpers
from currant.worker.completer import completion_params
from currant.worker.links import WORK_CONNECTION_OPTIONS

BATCH = 1000


def _prepare_table(app: currant.App, state: str) -> None:
    """Bring the jobs table into ``state`` (see the module docstring), with fresh statistics."""
    if state == "fresh":
        return
    app.enqueue_many("bench.noop", [()] * 100_000)
    table = sql.SQL("{}.jobs").format(sql.Identifier(app.schema))
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        if state == "history100k":
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET state = 'succeeded', attempts = 1, started_at = now(), finished_at = now()"
                ).format(table)
            )
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))


@pytest.mark.benchmark
@pytest.mark.parametrize("completion", ["complete_succeeded", "complete_succeeded_discarding"])
@pytest.mark.parametrize("table_state", ["fresh", "history100k", "backlog100k"])
def test_claim_complete_roundtrip(
    benchmark: Any, bench_dsn: str, fresh_schema: Callable[[str], str], table_state: str, completion: str
) -> None:
    schema = fresh_schema("bench_rt" if table_state == "fresh" else f"bench_rt_{table_state}")
    benchmark.group = "claim+complete x1000"
    app = currant.App(bench_dsn, schema=schema)
    q = queries(schema)
    try:
        app.migrate()
        _prepare_table(app, table_state)
        with psycopg.connect(bench_dsn, autocommit=True, options=WORK_CONNECTION_OPTIONS) as conn:
            # The worker's connection setup: its planner settings, and binary
            # array dumpers for the id arrays.
            register_array_dumpers(conn)
            row = conn.execute(
                q["register_worker"],
                {"hostname": socket.gethostname(), "pid": os.getpid(), "queues": ["default"], "concurrency": 1},
            ).fetchone()
            assert row is not None
            worker = int(row[0])
            claim_params = {"queue": "default", "limit": BATCH, "worker": worker}

            def setup() -> None:
                app.enqueue_many("bench.noop", [()] * BATCH)

            def roundtrip() -> tuple[int, int]:
                rows = conn.execute(q["claim"], claim_params, prepare=True).fetchall()
                (fast,), general = completion_params(
                    [(job_id, attempt, None) for job_id, attempt, *_rest in rows], worker
                )
                assert general is None
                done = conn.execute(q[completion], fast, prepare=True).fetchall()[0][0]
                return len(rows), done

            result = benchmark.pedantic(roundtrip, setup=setup, rounds=30, warmup_rounds=3, iterations=1)
    finally:
        app.close()
    assert result == (BATCH, BATCH)
