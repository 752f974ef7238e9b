"""The server's work per job in instructions, counted by callgrind.

Wall-clock time on a shared machine moves by 20-50 % from one minute to the
next; the number of instructions a statement executes does not (valgrind
counts them, whatever else the machine is doing). So the shape of the jobs
table and the hot statements are compared here by what they cost the
server, not by how long they took.

A throwaway cluster is made with ``initdb`` in a temporary directory (run as
the ``postgres`` user when this runs as root: PostgreSQL refuses root). A
normal server prepares each case; then the server is stopped and the one
statement measured runs in a single-user backend (``postgres --single``)
under ``valgrind --tool=callgrind``, collecting only inside the statement.

``copy``: instructions per row of a binary COPY of N rows, read from a file
the server wrote: into the floor's table (``benchmarks/floor.py``: ids by
``nextval``) and into ``jobs`` (ids sent, as ``enqueue_many`` does), as
migrated and one change to its shape at a time (``profile_db.JOBS_VARIANTS``),
then per id of the id reservation (``reserve_ids``).

``drain``: instructions per job of 50 claims of 1,000 jobs and their 50
completions (planning included; the work connection's planner settings).
Each statement is sent as literal SQL, so it is planned every time with its
1,000-element arrays as constants; ``--generic`` runs them as the worker
does once its prepared statements settle (after five runs PostgreSQL picks
a generic plan: ``pg_prepared_statements`` showed 7 generic, 5 custom after
12 completions), through ``PREPARE`` and ``EXECUTE`` under
``plan_cache_mode=force_generic_plan``, the floor's statements too.

    python benchmarks/instructions.py copy [--jobs 20000]
    python benchmarks/instructions.py drain [--generic]

Needs valgrind and PostgreSQL's server binaries (``--bindir``; default: the
directory of ``postgres`` on PATH or the newest ``/usr/lib/postgresql/*/bin``).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.floor import CLAIM as FLOOR_CLAIM
from benchmarks.floor import DELETE as FLOOR_DELETE
from benchmarks.floor import NOOP_PAYLOAD, PLANNER_GUARDS, create_floor_table
from benchmarks.floor import statement as floor_sql
from benchmarks.profile_db import (
    FLOOR_COLUMNS,
    FLOOR_SCHEMA,
    JOBS_COLUMNS,
    JOBS_VARIANTS,
    SCHEMA,
    fresh_jobs_table,
)
from currant.sql import queries

_TOTALS = re.compile(r"^totals:\s+(\d+)", re.MULTILINE)
CLAIMS, CLAIM_BATCH = 50, 1_000


def find_bindir() -> str:
    found = shutil.which("postgres")
    if found:
        return os.path.dirname(found)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[-3]))
    if not candidates:
        raise SystemExit("PostgreSQL's server binaries not found; pass --bindir")
    return os.path.dirname(candidates[-1])


class Cluster:
    """A throwaway data directory, started and stopped around each case."""

    def __init__(self, bindir: str, root: str) -> None:
        self.bindir, self.root = bindir, root
        self.data = os.path.join(root, "data")
        self.port = 5400 + os.getpid() % 500
        self._run(["initdb", "-D", self.data, "-A", "trust", "-U", "postgres"])

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        argv = [os.path.join(self.bindir, argv[0]), *argv[1:]]
        return subprocess.run(self._as_owner(argv), check=True, capture_output=True, text=True, **kwargs)

    @contextlib.contextmanager
    def server(self) -> Iterator[psycopg.Connection[Any]]:
        self._run(
            [
                "pg_ctl",
                "-D",
                self.data,
                "-w",
                "-l",
                os.path.join(self.root, "log"),
                "-o",
                f"-p {self.port} -k {self.root} -c listen_addresses=''",
                "start",
            ]
        )
        try:
            with psycopg.connect(
                host=self.root, port=self.port, user="postgres", dbname="postgres", autocommit=True
            ) as conn:
                yield conn
        finally:
            self._run(["pg_ctl", "-D", self.data, "-w", "stop"])

    def snapshot(self) -> None:
        """Keep a copy of the (stopped) data directory for :meth:`restore`."""
        subprocess.run(["cp", "-a", self.data, self.data + ".saved"], check=True)

    def restore(self) -> None:
        """Back to the snapshot: a measured script changes the data it ran on."""
        shutil.rmtree(self.data)
        subprocess.run(["cp", "-a", self.data + ".saved", self.data], check=True)

    def count(self, script: str, collect: list[str]) -> int:
        """Instructions executed inside the ``collect`` functions while a
        single-user backend runs ``script`` (one statement per line)."""
        out = os.path.join(self.root, "callgrind.out")
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            *(f"--toggle-collect={name}" for name in collect),
            os.path.join(self.bindir, "postgres"),
            "--single",
            "-D",
            self.data,
            "postgres",
        ]
        done = subprocess.run(self._as_owner(argv), input=script, capture_output=True, text=True, check=True)
        if "ERROR:" in done.stdout + done.stderr:
            raise SystemExit(f"statement failed in the single-user backend:\n{done.stdout[-2000:]}")
        match = _TOTALS.search(Path(out).read_text())
        if match is None:
            raise SystemExit(f"no totals in {out}")
        return int(match.group(1))


def one_line(statement: str) -> str:
    return " ".join(statement.split())


def profile_copy(cluster: Cluster, n: int) -> None:
    stream = os.path.join(cluster.root, "rows.bin")
    print(f"server instructions per row of a binary COPY of {n:,} rows (callgrind, inside CopyFrom)")

    def measure_copy(prepare: Callable[[psycopg.Connection[Any]], None], target: str) -> int:
        with cluster.server() as conn:
            prepare(conn)
            conn.execute(f"COPY {target} TO '{stream}' (FORMAT BINARY)")
            conn.execute(f"TRUNCATE {target.split(' (')[0]}")
            conn.execute("CHECKPOINT")
        return cluster.count(f"COPY {target} FROM '{stream}' (FORMAT BINARY)\n", ["CopyFrom"]) // n

    def floor_rows(conn: psycopg.Connection[Any]) -> None:
        create_floor_table(conn, FLOOR_SCHEMA)
        conn.execute(
            f"INSERT INTO {FLOOR_SCHEMA}.t (queue, task, payload) SELECT 'default', 'bench.noop', %s"
            " FROM generate_series(1, %s)",
            (NOOP_PAYLOAD, n),
        )

    floor = measure_copy(floor_rows, f"{FLOOR_SCHEMA}.t {FLOOR_COLUMNS}")
    print(f"{'floor table (ids by nextval)':<42} {floor:>8,}  1.00x")
    for name, (ddl, columns) in JOBS_VARIANTS.items():

        def jobs_rows(conn: psycopg.Connection[Any], ddl: list[str] = ddl) -> None:
            fresh_jobs_table(conn)
            for statement in ddl:
                conn.execute(statement)
            conn.execute(
                f"INSERT INTO {SCHEMA}.jobs {JOBS_COLUMNS} SELECT g, 'default', 'bench.noop', %s, 0, NULL,"
                " now(), 'queued', NULL FROM generate_series(1, %s) g",
                (NOOP_PAYLOAD, n),
            )

        count = measure_copy(jobs_rows, f"{SCHEMA}.jobs {columns}")
        print(f"{name:<42} {count:>8,}  {floor / count:.2f}x")
    with cluster.server() as conn:
        fresh_jobs_table(conn)
        statement = (
            pgsql.SQL(queries(SCHEMA)["reserve_ids"].replace("%(n)s", "{n}")).format(n=pgsql.Literal(n)).as_string(conn)
        )
    per_id = cluster.count(one_line(statement) + "\n", ["PortalRun", "pg_plan_queries"]) // n
    print(f"{'reserve_ids, per id':<42} {per_id:>8,}")


def prepared(name: str, template: str, params: list[tuple[str, str]]) -> str:
    """``PREPARE name(types) AS template``, its ``%(param)s`` made positional."""
    text = template
    for position, (param, _type) in enumerate(params, 1):
        text = text.replace(f"%({param})s", f"${position}").replace(f"%({param})b", f"${position}")
    return one_line(f"PREPARE {name}({', '.join(kind for _, kind in params)}) AS {text}")


def profile_drain(cluster: Cluster, generic: bool = False) -> None:
    sql = queries(SCHEMA)
    with cluster.server() as conn:
        fresh_jobs_table(conn)
        conn.execute(
            f"INSERT INTO {SCHEMA}.jobs (queue, task, payload) SELECT 'default', 'bench.noop', %s"
            " FROM generate_series(1, %s)",
            (NOOP_PAYLOAD, CLAIMS * CLAIM_BATCH),
        )
        (worker,) = conn.execute(
            f"INSERT INTO {SCHEMA}.workers (hostname, pid, queues) VALUES ('bench', 1, '{{default}}') RETURNING id"
        ).fetchone()  # type: ignore[misc]
        ids = [row[0] for row in conn.execute(f"SELECT id FROM {SCHEMA}.jobs ORDER BY id")]
        create_floor_table(conn, FLOOR_SCHEMA)
        conn.execute(
            f"INSERT INTO {FLOOR_SCHEMA}.t (queue, task, payload) SELECT 'default', 'bench.noop', %s"
            " FROM generate_series(1, %s)",
            (NOOP_PAYLOAD, CLAIMS * CLAIM_BATCH),
        )
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.jobs")
        # Not analyzed, as floor.py leaves it (its comment: statistics turn
        # the floor's claim into a hash join over the whole table).
        conn.execute(f"VACUUM {FLOOR_SCHEMA}.t")
        conn.execute("CHECKPOINT")

        def literal(template: str, **values: Any) -> str:
            text = template
            for name in values:
                text = text.replace(f"%({name})s", "{" + name + "}").replace(f"%({name})b", "{" + name + "}")
            return one_line(
                pgsql.SQL(text).format(**{name: pgsql.Literal(value) for name, value in values.items()}).as_string(conn)
            )

        batches = [ids[k * CLAIM_BATCH : (k + 1) * CLAIM_BATCH] for k in range(CLAIMS)]
        names = ("complete_succeeded", "complete_succeeded_discarding")
        floor_claim = one_line(floor_sql(FLOOR_CLAIM, FLOOR_SCHEMA).as_string(conn))
        floor_delete = floor_sql(FLOOR_DELETE, FLOOR_SCHEMA).as_string(conn)

        def array(values: list[int]) -> str:
            return pgsql.Literal(values).as_string(conn)

        if not generic:
            claims = [literal(sql["claim"], worker=worker, queue="default", limit=CLAIM_BATCH)] * CLAIMS
            completions = {
                name: [literal(sql[name], worker=worker, ids=batch, attempt=1) for batch in batches] for name in names
            }
            floor_claims = [floor_claim] * CLAIMS
            floor_deletes = [one_line(floor_delete.replace("%s", array(batch))) for batch in batches]
        else:
            # The PREPARE lines run once, before the claims: their cost is
            # spread over the 50,000 jobs, as a worker's over its lifetime.
            claims = [
                prepared("claim", sql["claim"], [("queue", "text"), ("limit", "integer"), ("worker", "bigint")]),
                *[f"EXECUTE claim('default', {CLAIM_BATCH}, {worker})"] * CLAIMS,
            ]
            completions = {
                name: [
                    prepared("done", sql[name], [("ids", "bigint[]"), ("attempt", "integer"), ("worker", "bigint")]),
                    *[f"EXECUTE done({array(batch)}, 1, {worker})" for batch in batches],
                ]
                for name in names
            }
            floor_claims = [f"PREPARE floor_claim AS {floor_claim}", *["EXECUTE floor_claim"] * CLAIMS]
            floor_deletes = [
                one_line(f"PREPARE floor_delete(bigint[]) AS {floor_delete.replace('%s', '$1')}"),
                *[f"EXECUTE floor_delete({array(batch)})" for batch in batches],
            ]
    guards = "".join(f"SET {setting}\n" for setting in PLANNER_GUARDS.replace("-c ", "").split())
    if generic:
        guards = guards.replace("force_custom_plan", "force_generic_plan")
    collect = ["PortalRun", "pg_plan_queries"]
    cluster.snapshot()
    jobs = CLAIMS * CLAIM_BATCH

    def per_job(statements: list[str], settings: str = guards) -> int:
        # Every case starts from the same data: a measured script changes it.
        cluster.restore()
        return cluster.count(settings + "".join(statement + "\n" for statement in statements), collect) // jobs

    def interleaved(first: list[str], second: list[str]) -> list[str]:
        # Each claim followed by its completion (PREPARE lines, if any, first).
        return [line for pair in zip(first, second, strict=True) for line in pair]

    claim = per_job(claims)
    plans = "generic plans (PREPARE, EXECUTE)" if generic else "literal SQL, planned every time"
    print(f"server instructions per job, {CLAIMS} claims of {CLAIM_BATCH:,} and their completions (callgrind, {plans})")
    print(f"{'claim':<42} {claim:>8,}")
    # The claims again, each followed by its completion: the difference is the completions.
    for name, statements in completions.items():
        both = per_job(interleaved(claims, statements))
        print(f"{name:<42} {both - claim:>8,}")
    # The floor as floor.py runs it by default: no planner settings (but the plan mode).
    floor_settings = "SET plan_cache_mode = force_generic_plan\n" if generic else ""
    floor_claim_cost = per_job(floor_claims, settings=floor_settings)
    floor_both = per_job(interleaved(floor_claims, floor_deletes), settings=floor_settings)
    print(f"{'floor: claim':<42} {floor_claim_cost:>8,}")
    print(f"{'floor: delete':<42} {floor_both - floor_claim_cost:>8,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", choices=["copy", "drain"])
    parser.add_argument("--jobs", type=int, default=20_000, help="copy: rows per COPY (default 20,000)")
    parser.add_argument("--bindir", default=None, help="PostgreSQL's server binaries")
    parser.add_argument("--generic", action="store_true", help="drain: prepared statements, generic plans")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found (apt-get install valgrind)")
    root = tempfile.mkdtemp(prefix="currant-instructions-")
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        cluster = Cluster(args.bindir or find_bindir(), root)
        if args.profile == "copy":
            profile_copy(cluster, args.jobs)
        else:
            profile_drain(cluster, args.generic)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
