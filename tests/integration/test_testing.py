"""currant.testing.drain: every ready job run in the test's process, through the
worker's own statements, on the test's schema."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import psycopg
import pytest

import currant
from currant.testing import adrain, drain
from tests.conftest import state_counts
from tests.integration.test_first_hour import readme_block


class Boom(Exception):
    pass


def _workers(db: psycopg.Connection[Any], schema: str) -> int:
    return db.execute(f'SELECT count(*) FROM "{schema}".workers').fetchone()[0]


def test_drain_runs_jobs_dependents_and_results(app: currant.App, db: psycopg.Connection[Any]) -> None:
    seen: list[int] = []

    @app.task(name="t.double")
    def double(n: int) -> int:
        seen.append(n)
        return n * 2

    first = double.enqueue(1)
    child = double.options(depends_on=[first], pass_results="first").enqueue()
    chain = app.chain([double.s(5), double.s()], pass_results=True)
    report = drain(app)
    assert seen == [1, 5, 2, 10]  # parents first; each child after its parent's completion
    assert report.succeeded == [first, chain[0], child, chain[1]]
    assert app.get_job(child).result == 4
    assert app.get_job(chain[1]).result == 20
    assert state_counts(db, app.schema) == {"succeeded": 4}
    assert _workers(db, app.schema) == 0  # the drain's worker row is gone
    assert len(drain(app)) == 0  # nothing left


def test_fail_fast_raises_the_handlers_exception_after_recording_it(
    app: currant.App, db: psycopg.Connection[Any]
) -> None:
    ran: list[str] = []

    @app.task(name="t.work", max_attempts=2)
    def work(what: str) -> None:
        ran.append(what)
        if what == "bad":
            raise Boom("no good")

    bad = work.enqueue("bad")
    later = work.enqueue("later")  # claimed in the same batch, never started
    with pytest.raises(Boom, match="no good") as caught:
        drain(app)
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "work" in frames  # the handler's own frame: the traceback is the real one
    assert ran == ["bad"]
    failed = app.get_job(bad)
    assert (failed.state, failed.attempts) == ("retrying", 1)
    assert failed.errors[0]["error"] == "Boom: no good"
    untouched = app.get_job(later)
    assert (untouched.state, untouched.attempts) == ("queued", 0)  # handed back, attempt refunded
    assert _workers(db, app.schema) == 0


def test_without_fail_fast_retries_come_due_by_moving_the_clock(app: currant.App) -> None:
    attempts: list[int] = []

    @app.task(name="t.flaky", max_attempts=3, retry_backoff=60)
    def flaky() -> None:
        attempts.append(currant.current_job().attempt)
        raise Boom("again")

    job = flaky.enqueue()
    report = drain(app, fail_fast=False)
    assert [a.outcome for a in report.attempts] == ["retrying"]  # the retry is not due: the drain ends
    report = drain(app, fail_fast=False, advance_clock=3600)
    assert [a.outcome for a in report.attempts] == ["retrying", "failed"]
    assert attempts == [1, 2, 3]
    assert 45 < report.clock_advanced < 3600  # moved to each retry (60 s base, ±25 %), not by the whole budget
    assert app.get_job(job).state == "failed"


def test_delayed_jobs_run_only_within_the_clock_budget(app: currant.App) -> None:
    @app.task(name="t.later")
    def later() -> str:
        return "done"

    job = later.options(delay=600).enqueue()
    assert len(drain(app, advance_clock=599)) == 0
    assert app.get_job(job).state == "scheduled"
    report = drain(app, advance_clock=601)
    assert report.succeeded == [job]
    assert app.get_job(job).result == "done"


def test_limited_jobs_run_within_their_limits(app: currant.App) -> None:
    @app.task(name="t.api", rate_limit="1/m")
    def call_api(n: int) -> None: ...

    @app.task(name="t.sync", max_running=1, limit_key="customer")
    def sync_account(customer: str) -> None: ...

    calls = call_api.enqueue_many([(n,) for n in range(3)])
    syncs = sync_account.enqueue_many([("acme",), ("acme",), ("initech",)])
    report = drain(app)
    assert set(report.succeeded) == {calls[0], *syncs}  # one token; max_running never blocks a lone drain
    report = drain(app, advance_clock=200)
    assert report.succeeded == calls[1:]  # each a token later (60 s apart)
    assert 119 < report.clock_advanced < 200


def test_adrain_runs_async_and_sync_handlers(app: currant.App) -> None:
    threads: dict[str, bool] = {}

    @app.task(name="t.sync")
    def sync_one() -> int:
        try:
            asyncio.get_running_loop()
            threads["sync"] = True
        except RuntimeError:
            threads["sync"] = False  # no loop on its thread: Django's ORM would work here
        return 1

    @app.task(name="t.async")
    async def async_one() -> int:
        await asyncio.sleep(0)
        return 2

    async def scenario() -> list[int]:
        ids = [await sync_one.aenqueue(), await async_one.aenqueue()]
        report = await adrain(app)
        await app.aclose()
        return [report.outcomes[i] == "succeeded" for i in ids]

    assert asyncio.run(scenario()) == [True, True]
    assert threads == {"sync": False}


def test_drain_refuses_bad_arguments(app: currant.App) -> None:
    with pytest.raises(ValueError, match="advance_clock"):
        drain(app, advance_clock=-1)
    with pytest.raises(ValueError, match="queues"):
        drain(app, queues="default")

    async def inside_a_loop() -> None:
        drain(app)

    with pytest.raises(RuntimeError, match="adrain"):
        asyncio.run(inside_a_loop())


def test_the_readme_testing_example_runs_as_written(database_dsn: str, tmp_path: Path) -> None:
    """The README's "Testing your tasks" files, saved as they are and run by pytest
    in a process of their own: the plugin comes from the installed entry point."""
    for name in ("shop.py", "conftest.py", "test_shop.py"):
        (tmp_path / name).write_text(readme_block(f"file {name}"), encoding="utf-8")
    env = {**os.environ, "CURRANT_TEST_DSN": database_dsn, "PYTHONPATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shop.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "4 passed" in proc.stdout, proc.stdout[-2000:]
    with psycopg.connect(database_dsn) as conn:  # every test's schema was dropped
        left = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'currant_test_%'").fetchone()[0]
    assert left == 0


def test_drain_serves_the_queues_asked_and_runs_the_apps_hooks(app: currant.App) -> None:
    seen: list[tuple[int, str]] = []

    class Recorder:
        def after_job(self, job: Any, outcome: Any) -> None:
            seen.append((job.id, outcome.status))

    app.add_hook(Recorder())

    @app.task(name="t.mail", queue="mail")
    def mail() -> None: ...

    @app.task(name="t.plain")
    def plain() -> None: ...

    mailed, other = mail.enqueue(), plain.enqueue()
    assert drain(app, queues=["mail"]).succeeded == [mailed]
    assert app.get_job(other).state == "queued"
    assert seen == [(mailed, "succeeded")]


def test_adrain_fail_fast_raises_too(app: currant.App) -> None:
    @app.task(name="t.bad")
    async def bad() -> None:
        raise Boom("async trouble")

    async def scenario() -> None:
        try:
            await bad.aenqueue()
            await adrain(app)
        finally:
            await app.aclose()

    with pytest.raises(Boom, match="async trouble"):
        asyncio.run(scenario())


def test_drain_on_the_callers_connection_runs_inside_its_transaction(app: currant.App, database_dsn: str) -> None:
    @app.task(name="t.echo")
    def echo(text: str) -> str:
        return text

    async def scenario() -> list[int]:
        async with await psycopg.AsyncConnection.connect(database_dsn) as conn:
            job = await app.aenqueue(echo, ("hi",), connection=conn)  # not committed
            report = await adrain(app, connection=conn)
            await conn.rollback()
        await app.aclose()
        return [job, *report.succeeded]

    job, *ran = asyncio.run(scenario())
    assert ran == [job]
    assert app.get_job(job) is None  # rolled back: the job and its run with it
    with psycopg.connect(database_dsn) as conn:
        job = app.enqueue(echo, ("sync",), connection=conn)
        assert drain(app, connection=conn, advance_clock=1).succeeded == [job]
        conn.rollback()
    assert app.get_job(job) is None


def test_jobs_of_limited_tasks_enqueued_by_name_are_held_to_their_limits(app: currant.App, database_dsn: str) -> None:
    @app.task(name="t.api", rate_limit="1/m")
    def call_api(n: int) -> None: ...

    with currant.App(database_dsn, schema=app.schema) as producer:  # knows no task: no limit key
        ids = producer.enqueue_many("t.api", [(n,) for n in range(3)])
    assert drain(app).succeeded == ids[:1]  # the rest handed to the limit, as a worker does
    assert drain(app, advance_clock=130).succeeded == ids[1:]
