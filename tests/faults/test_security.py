"""Security (T41, T42, NOTIFY payloads): no pickle, a least-privilege runtime role,
and notifications that carry no job data."""

from __future__ import annotations

import re
import signal
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import currant
from tests.conftest import ROOT, wait_for
from tests.faults.checker import check_schema
from tests.faults.helpers import FAST, counts, ledger_rows, wait_all_succeeded, worker_id_of

SOURCE_SUFFIXES = {".py", ".pyx", ".pyi", ".pxd", ".sql"}


def test_no_pickle_anywhere_in_the_package() -> None:
    offenders = []
    pattern = re.compile(r"\b(c?pickle|dill|cloudpickle|marshal|shelve)\b|\beval\(|\bexec\(")
    for path in sorted((ROOT / "currant").rglob("*")):
        if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts:
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line) and "never pickle" not in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_importing_the_worker_loads_no_pickle_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys, currant, currant.worker.worker, currant.cli, currant.admin;"
        "print(sorted(m for m in sys.modules if 'pickle' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- least privilege (T42) --------------------------------------------------------------


def _as(dsn: str, user: str) -> str:
    params = conninfo_to_dict(dsn)
    params["user"] = user
    return make_conninfo(**params)


def test_least_privilege_role_runs_the_whole_job_life(
    pg_cluster: Any, cluster_app: currant.App, cluster_db: Any, cluster_spawn: Any, cluster_schema: str
) -> None:
    schema = cluster_schema
    role = f"rt_{schema}"
    ident, rident = pgsql.Identifier(schema), pgsql.Identifier(role)
    for statement in (
        "CREATE ROLE {r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
        "ALTER ROLE {r} SET idle_in_transaction_session_timeout = '10s'",
        "GRANT USAGE ON SCHEMA {s} TO {r}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
    ):
        cluster_db.execute(pgsql.SQL(statement).format(r=rident, s=ident))
    runtime_dsn = _as(pg_cluster.dsn, role)
    app = currant.App(runtime_dsn, schema=schema)
    try:
        # The runtime role cannot change the schema.
        with psycopg.connect(runtime_dsn, autocommit=True) as conn:
            for ddl in (
                f'ALTER TABLE "{schema}".jobs ADD COLUMN x int',
                f'CREATE TABLE "{schema}".x (a int)',
                f'DROP TABLE "{schema}".jobs',
                f'CREATE INDEX ON "{schema}".jobs (task)',
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(ddl)
        # A worker of the runtime role dies holding a job; another rescues it.
        victim = cluster_spawn("--concurrency", "1", *FAST, dsn=runtime_dsn)
        slow = app.enqueue("record_slowly", ("slow", 30.0))
        key_of = {slow: "slow"}
        wait_for(lambda: app.get_job(slow).state == "running", timeout=30)  # type: ignore[union-attr]
        victim.kill()  # the job is leased to it: only a rescue can bring it back
        cluster_db.execute(
            f'UPDATE "{schema}".jobs SET payload = %s WHERE id = %s',
            (currant.codec.encode_payload(("slow", 0.01), None), slow),
        )
        key_of.update({app.enqueue("record", (f"r{i}",)): f"r{i}" for i in range(20)})
        ids = app.enqueue_many("record", [currant.Item(args=(f"u{i}",), unique_key=f"u{i}") for i in range(10)])
        key_of.update({job_id: f"u{i}" for i, job_id in enumerate(ids)})
        key_of[app.enqueue("fail_once", ("f1",))] = "f1"
        key_of[app.enqueue("record", ("later",), delay=0.5)] = "later"
        doomed = app.enqueue("record", ("never",), delay=60)
        assert app.cancel(doomed) == "cancelled"
        worker = cluster_spawn(*FAST, dsn=runtime_dsn)
        wait_all_succeeded(cluster_db, schema, len(key_of), timeout=60)
        assert app.get_job(slow).attempts == 2  # type: ignore[union-attr]
        assert app.get_job(doomed).state == "cancelled"  # type: ignore[union-attr]
        history = check_schema(
            cluster_db,
            schema,
            set(key_of.values()),
            key_of={**key_of, doomed: "never"},
            attempted=set(key_of.values()) | {"never"},
        )
        assert not history.lost and not history.unexpected, history.summary()
        assert history.duplicated == {"f1": 2}  # fail_once writes its ledger on both attempts
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        # Retention pruning (DELETE) works too.
        pruner = cluster_spawn("--burst", "--keep-succeeded", "0.001", "--keep-failed", "0.001", *FAST, dsn=runtime_dsn)
        assert pruner.wait(30) == 0, pruner.log()[-3000:]
        assert counts(cluster_db, schema) == {}
        for process in (worker, pruner, victim):
            assert "permission denied" not in process.log(), process.log()[-3000:]
    finally:
        app.close()
        cluster_db.execute(pgsql.SQL("DROP OWNED BY {r}").format(r=rident))
        cluster_db.execute(pgsql.SQL("DROP ROLE {r}").format(r=rident))


# -- NOTIFY payloads carry no job data ---------------------------------------------------------

# h:<slots>: the hosts taking turns at "jobs ready" (currant.worker.turns), slot numbers only.
PAYLOAD = re.compile(r"(?:r:(?:default|async)|d:\d+(?:\.\d+)?:(?:default|async)|c:\d+|h:\d+(?:,\d+)*)\Z")


def test_notify_payloads_carry_no_job_data(
    app: currant.App, db: Any, database_dsn: str, spawn_worker: Any, schema_name: str
) -> None:
    listener = psycopg.connect(database_dsn, autocommit=True)
    try:
        listener.execute(f'LISTEN "{app.channel}"')
        secret = "SECRET-4f1c"
        worker = spawn_worker("--batch-size", "10", "--concurrency", "2", *FAST)
        worker_id_of(db, schema_name, worker.pid)
        for i in range(5):
            app.enqueue("record", (f"{secret}-{i}",), unique_key=f"{secret}-key-{i}")
        app.enqueue_many("record", [(f"{secret}-bulk-{i}",) for i in range(5)])
        app.enqueue("record", (f"{secret}-later",), delay=0.3)
        app.enqueue("fail_once", (f"{secret}-retry",))
        running = app.enqueue("cooperative", (f"{secret}-coop",))
        wait_for(
            lambda: any(key == f"{secret}-coop:started" for key, _, _ in ledger_rows(db, schema_name)),
            message="the cooperative job started",
        )
        assert app.cancel(running) == "cancel_requested"
        wait_for(lambda: app.get_job(running).state == "cancelled", timeout=20)  # type: ignore[union-attr]
        wait_for(lambda: counts(db, schema_name).get("succeeded", 0) == 12, timeout=30)
        app.enqueue_many("record_slowly", [(f"{secret}-s{i}", 0.5) for i in range(6)])
        wait_for(lambda: counts(db, schema_name).get("running", 0) == 6, message="the six slow jobs claimed")
        worker.signal(signal.SIGTERM)  # hands back the prefetched ones and notifies their queue
        assert worker.wait(30) == 0
        payloads = [notify.payload for notify in listener.notifies(timeout=1.0)]
    finally:
        listener.close()
    assert payloads
    bad = [p for p in payloads if not PAYLOAD.match(p) or secret in p or len(p.encode()) >= 8000]
    assert not bad, bad
    kinds = {p[0] for p in payloads}
    assert kinds == {"r", "d", "c", "h"}, payloads
    assert f"c:{running}" in payloads
    print(f"{len(payloads)} notifications: {sorted(set(payloads))[:8]}")
