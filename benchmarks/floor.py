"""The raw-SQL floor: what psycopg alone does on this machine, with no queue logic.

Currant is compared against this number, so it is deliberately the simplest
thing that is still a queue: a minimal table with a partial "ready" index,
one binary COPY for the insert, and one process draining it with the classic
``FOR UPDATE SKIP LOCKED`` claim followed by a ``DELETE`` of the claimed ids.
No retries, leases, notifications, payload decoding or handler calls.

Run alone: ``python benchmarks/floor.py --dsn DSN [--jobs N]``; ``e2e.py``
imports :func:`run_floor`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import psycopg
from psycopg import sql

SCHEMA = "bench_floor"
BATCH = 1000
# The planner settings of Currant's work connection (currant.worker.links,
# WORK_CONNECTION_OPTIONS), repeated here so the floor stays psycopg alone.
# Without them this floor's claim sorts the whole remaining backlog for every
# batch once the table is big enough (BENCHMARKS.md, "About the floor"); the
# guarded floor is the stronger reference.
PLANNER_GUARDS = (
    "-c enable_nestloop=off -c enable_seqscan=off -c enable_bitmapscan=off -c plan_cache_mode=force_custom_plan"
)
# msgpack of [[], {}]: the same bytes Currant stores for a no-argument job, so
# both sides move the same payload.
NOOP_PAYLOAD = b"\x92\x90\x80"

_DDL = """
DROP SCHEMA IF EXISTS {schema} CASCADE;
CREATE SCHEMA {schema};
CREATE TABLE {schema}.t (
    id bigserial PRIMARY KEY,
    queue text NOT NULL,
    task text NOT NULL,
    payload bytea NOT NULL,
    state smallint NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX t_ready ON {schema}.t (queue, id) WHERE state = 0;
"""

CLAIM = """
WITH c AS (
    SELECT id FROM {schema}.t WHERE state = 0 AND queue = 'default'
    ORDER BY id LIMIT {batch} FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.t SET state = 1, attempts = {schema}.t.attempts + 1
FROM c WHERE {schema}.t.id = c.id
RETURNING {schema}.t.id, {schema}.t.payload
"""

DELETE = "DELETE FROM {schema}.t WHERE id = ANY(%s)"


def statement(template: str, schema: str) -> sql.Composed:
    # Only identifiers and a constant are templated; values are bound.
    return sql.SQL(template).format(schema=sql.Identifier(schema), batch=sql.Literal(BATCH))


def create_floor_table(conn: psycopg.Connection[Any], schema: str = SCHEMA) -> None:
    """(Re)create the floor's schema and its one table, ``<schema>.t``."""
    conn.execute(statement(_DDL, schema))


def run_floor(
    dsn: str, n: int, schema: str = SCHEMA, guarded: bool = False, checkpoint: bool = False
) -> dict[str, Any]:
    """Insert ``n`` rows by binary COPY, then drain them; returns timings and rates.

    ``guarded``: the drain connection runs with :data:`PLANNER_GUARDS`.
    ``checkpoint``: a CHECKPOINT between the two, as ``drain_floor.py`` gives
    the worker's drain.
    """
    with psycopg.connect(dsn, autocommit=True, **({"options": PLANNER_GUARDS} if guarded else {})) as conn:
        create_floor_table(conn, schema)
        rows = [("default", "bench.noop", NOOP_PAYLOAD, 0, 0)] * n

        # Insert: one transaction, one COPY, binary rows, types declared up front
        # so psycopg does not guess per value.
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            copy_stmt = statement(
                "COPY {schema}.t (queue, task, payload, state, attempts) FROM STDIN (FORMAT BINARY)", schema
            )
            with cur.copy(copy_stmt) as copy:
                copy.set_types(["text", "text", "bytea", "int2", "int4"])
                for row in rows:
                    copy.write_row(row)
        insert_s = time.perf_counter() - started

        # No ANALYZE here, on purpose. With fresh statistics the planner joins
        # the claimed ids back to t with a hash join over a sequential scan of
        # the whole table (about 20 ms per batch at 100k rows) instead of a
        # nested loop on the primary key, halving the drain rate. Currant's
        # claim has the same shape, so see BENCHMARKS.md for the effect there.

        if checkpoint:
            conn.execute("CHECKPOINT")

        # Drain: claim a batch, delete it; autocommit so each is its own
        # transaction, prepared so the plan is built once.
        claim = statement(CLAIM, schema)
        delete = statement(DELETE, schema)
        drained = 0
        started = time.perf_counter()
        with conn.cursor() as cur:
            while True:
                cur.execute(claim, prepare=True)
                batch = cur.fetchall()
                if not batch:
                    break
                cur.execute(delete, ([row[0] for row in batch],), prepare=True)
                drained += len(batch)
        drain_s = time.perf_counter() - started

        left = conn.execute(statement("SELECT count(*) FROM {schema}.t", schema)).fetchone()
        conn.execute(statement("DROP SCHEMA {schema} CASCADE", schema))
    ok = drained == n and left is not None and left[0] == 0
    return {
        "jobs": n,
        "guarded": guarded,
        "ok": ok,
        "drained": drained,
        "insert_s": insert_s,
        "drain_s": drain_s,
        "insert_jobs_per_s": n / insert_s,
        "drain_jobs_per_s": n / drain_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", default=os.environ.get("CURRANT_DSN"), help="default: $CURRANT_DSN")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--guarded", action="store_true", help="drain with Currant's planner settings")
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("--dsn or $CURRANT_DSN is required")
    result = run_floor(args.dsn, args.jobs, guarded=args.guarded)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
