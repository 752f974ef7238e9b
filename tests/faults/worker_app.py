"""The app the fault-injection tests' workers run (DSN and schema from the environment).

Like ``tests.apps.jobs`` its tasks record side effects in the ``ledger`` table
on a connection of their own, outside the job's transaction; unlike it, the
ledger write survives database restarts and terminated backends (it reconnects
and retries), so a fault shows up as a duplicate entry, never as a failed job.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg

import currant

app = currant.App()
_local = threading.local()

# Names that must be stored and used verbatim (T41).
WEIRD_TASK = "x'); DROP TABLE jobs;-- \"q\" ; ünïcødé ✓"
WEIRD_QUEUE = "\"; NOTIFY x; -- 'q' ; ünï ✓"


def _ledger_conn() -> psycopg.Connection[Any]:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(app.dsn, autocommit=True, connect_timeout=5, application_name="currant-test-ledger")
        _local.conn = conn
    return conn


def write_ledger(key: str) -> None:
    job = currant.current_job()
    params = (key, os.getpid(), job.attempt if job else None)
    deadline = time.monotonic() + 120
    while True:
        try:
            _ledger_conn().execute(
                f'INSERT INTO "{app.schema}".ledger (key, pid, attempt) VALUES (%s, %s, %s)', params
            )
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            conn = getattr(_local, "conn", None)
            if conn is not None:
                conn.close()
            time.sleep(0.1)


@app.task(name="rec", retry_backoff=0.05)
def rec(key: str) -> None:
    write_ledger(key)


@app.task(name="rec_slow", retry_backoff=0.05)
def rec_slow(key: str, seconds: float) -> None:
    time.sleep(seconds)
    write_ledger(key)


@app.task(name="cooperative", max_attempts=1)
def cooperative(key: str) -> None:
    write_ledger(key + ":started")
    job = currant.current_job()
    assert job is not None
    for _ in range(400):
        if job.cancel_requested:
            write_ledger(key + ":saw-cancel")
            raise currant.JobCancelled()
        time.sleep(0.05)
    write_ledger(key + ":finished")


@app.task(name="fail_once", retry_backoff=0.05)
def fail_once(key: str) -> str:
    write_ledger(key)
    job = currant.current_job()
    if job is not None and job.attempt == 1:
        raise RuntimeError("first attempt fails")
    return "ok"


@app.task(name=WEIRD_TASK, queue=WEIRD_QUEUE)
def weird(key: str) -> str:
    write_ledger(key)
    return key
