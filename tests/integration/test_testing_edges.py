"""currant.testing.drain at its edges: a handler's failed statement inside the
caller's transaction, a clock moved over several drains, batches handed whole
to limits, and connections of the wrong kind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import currant
from currant.testing import adrain, drain
from currant.testing.drain import BATCH


def test_a_handlers_integrity_error_in_the_callers_transaction_is_raised_and_recorded(
    app: currant.App, database_dsn: str
) -> None:
    with psycopg.connect(database_dsn) as conn:
        conn.execute(f'CREATE TABLE "{app.schema}".once (key text PRIMARY KEY)')
        conn.execute(f'INSERT INTO "{app.schema}".once VALUES (%s)', ["taken"])

        @app.task(name="t.insert", max_attempts=2)
        def insert(key: str) -> None:
            conn.execute(f'INSERT INTO "{app.schema}".once VALUES (%s)', [key])

        job = app.enqueue(insert, ("taken",), connection=conn)
        with pytest.raises(psycopg.errors.UniqueViolation):
            drain(app, connection=conn)
        # The caller's transaction is usable: only the handler's work was undone.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.commit()
    failed = app.get_job(job)
    assert failed is not None
    assert (failed.state, failed.attempts) == ("retrying", 1)
    assert failed.errors[0]["error"].startswith("UniqueViolation")


def test_adrain_runs_each_job_in_a_savepoint_of_the_callers_transaction_too(
    app: currant.App, database_dsn: str
) -> None:
    async def scenario() -> tuple[int, bool]:
        async with await psycopg.AsyncConnection.connect(database_dsn) as conn:
            await conn.execute(f'CREATE TABLE "{app.schema}".once (key text PRIMARY KEY)')
            await conn.execute(f'INSERT INTO "{app.schema}".once VALUES (%s)', ["taken"])

            @app.task(name="t.ainsert", max_attempts=1)
            async def ainsert(key: str) -> None:
                await conn.execute(f'INSERT INTO "{app.schema}".once VALUES (%s)', [key])

            job = await app.aenqueue(ainsert, ("taken",), connection=conn)
            try:
                await adrain(app, connection=conn)
            except psycopg.errors.UniqueViolation:
                raised = True
            else:
                raised = False
            await conn.commit()
        await app.aclose()
        return job, raised

    job, raised = asyncio.run(scenario())
    assert raised
    failed = app.get_job(job)
    assert failed is not None and failed.state == "failed"


def test_the_clock_goes_on_from_the_last_drain_on_its_own_connections(app: currant.App) -> None:
    later: list[int] = []

    @app.task(name="t.second")
    def second() -> None: ...

    @app.task(name="t.first")
    def first() -> None:
        # Enqueued on the App's pool, whose clock is not moved: due 150 s from real now.
        later.append(second.options(delay=150).enqueue())

    first.options(delay=100).enqueue()
    assert len(drain(app, advance_clock=101)) == 1
    report = drain(app, advance_clock=60)  # 100 s already passed: 50 more make it due
    assert report.succeeded == later
    assert 49 < report.clock_advanced < 60


def test_the_clock_never_moves_back_on_the_callers_connection(app: currant.App, database_dsn: str) -> None:
    @app.task(name="t.echo")
    def echo(text: str) -> str:
        return text

    with psycopg.connect(database_dsn) as conn:
        app.enqueue(echo, ("first",), delay=100, connection=conn)
        assert len(drain(app, connection=conn, advance_clock=101)) == 1
        # Due 150 s after the moved clock (about 250 s from real now).
        job = app.enqueue(echo, ("second",), delay=150, connection=conn)
        report = drain(app, connection=conn, advance_clock=160)
        assert report.succeeded == [job]
        conn.rollback()


def test_normal_jobs_behind_a_batch_handed_to_its_limits_still_run(app: currant.App, database_dsn: str) -> None:
    @app.task(name="t.api", rate_limit="1/h")
    def call_api(n: int) -> None: ...

    @app.task(name="t.plain")
    def plain() -> None: ...

    with currant.App(database_dsn, schema=app.schema) as producer:  # knows no task: no limit key
        spent = producer.enqueue("t.api", (0,))
        assert drain(app).succeeded == [spent]  # the hour's one token
        held = producer.enqueue_many("t.api", [(n,) for n in range(BATCH)])  # one whole claim batch
    normal = [plain.enqueue(), plain.enqueue()]
    report = drain(app)
    assert report.succeeded == normal
    assert not set(held) & set(report.outcomes)  # still held back by the rate limit


def test_a_connection_of_the_wrong_kind_is_refused_saying_what_to_pass(app: currant.App) -> None:
    class DjangoLikeWrapper:
        def ensure_connection(self) -> None: ...

    with pytest.raises(TypeError, match=r"psycopg\.Connection.*connection\.connection"):
        drain(app, connection=DjangoLikeWrapper())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="psycopg.AsyncConnection"):
        asyncio.run(adrain(app, connection=object()))  # type: ignore[arg-type]


_BROKEN_MIGRATION = """
import pytest

import currant


class HalfMigrated(currant.App):
    def migrate(self):
        with self.connect(autocommit=True) as conn:  # the schema exists, then the migration fails
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        raise RuntimeError("migration failed half-way")


base = HalfMigrated(schema="mine")


@pytest.fixture
def currant_base_app():
    return base


def test_uses_the_app(currant_app):
    pass


def test_the_app_is_back_where_it_was():
    assert base.schema == "mine"
"""


def test_the_plugin_drops_the_schema_and_restores_the_app_when_migrate_fails(database_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "test_broken.py").write_text(_BROKEN_MIGRATION, encoding="utf-8")
    env = {**os.environ, "CURRANT_TEST_DSN": database_dsn, "PYTHONPATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_broken.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 passed, 1 error" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "migration failed half-way" in proc.stdout
    with psycopg.connect(database_dsn) as conn:
        left = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'currant_test_%'").fetchone()[0]
    assert left == 0


_CLOCK_ACROSS_TESTS = """
import os

import currant
from currant.testing import drain

app = currant.App(os.environ["CURRANT_TEST_DSN"], schema=os.environ["CLOCK_SCHEMA"])


@app.task(name="t.later")
def later() -> None: ...


def test_moves_the_clock():
    app.migrate()
    later.options(delay=100).enqueue()
    assert drain(app, advance_clock=101).clock_advanced > 50  # about 100 s, less the time since the enqueue


def test_starts_from_real_time():
    job = later.options(delay=100).enqueue()
    assert drain(app).succeeded == []  # not due: the last test's clock is forgotten
    app.close()
"""


def test_the_plugin_forgets_the_drains_clock_between_tests(database_dsn: str, schema_name: str, tmp_path: Path) -> None:
    (tmp_path / "test_clock.py").write_text(_CLOCK_ACROSS_TESTS, encoding="utf-8")
    env = {**os.environ, "CURRANT_TEST_DSN": database_dsn, "CLOCK_SCHEMA": schema_name, "PYTHONPATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_clock.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "2 passed" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]
