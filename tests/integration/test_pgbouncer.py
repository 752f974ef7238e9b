"""Producers and workers through a real PgBouncer in transaction mode (issue 17, part 2).

Each test starts its own PgBouncer (tests/pgbouncer.py) in front of the test
database. What they hold the code to: no startup options, no session state,
no server-side prepared statements through the pooler; LISTEN over a direct
``--listen-dsn`` or, without one, polling with a log line saying so; and a
PgBouncer restart in the middle of a drain loses no job and runs none twice
(beyond the ones in flight at that moment, counted and bounded).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import currant
from tests.conftest import ledger, state_counts, wait_for, wait_listening
from tests.pgbouncer import PgBouncer


@pytest.fixture
def bouncer(database_dsn: str) -> Iterator[PgBouncer]:
    instance = PgBouncer(database_dsn)
    yield instance
    instance.close()


@pytest.fixture
def pooled_app(app: currant.App, bouncer: PgBouncer) -> Iterator[currant.App]:
    """The test's app (schema migrated directly), as a producer through PgBouncer."""
    instance = currant.App(bouncer.dsn(), schema=app.schema, transaction_pooling=True)
    yield instance
    instance.close()


def _through(bouncer: PgBouncer, *args: str) -> dict[str, str]:
    return {"CURRANT_DSN": bouncer.dsn(), **dict(zip(args[::2], args[1::2], strict=True))}


def test_without_the_flag_a_worker_says_what_is_wrong_and_exits(bouncer: PgBouncer, spawn_worker: Any) -> None:
    """The reported failure: the planner settings sent at connect time made
    PgBouncer refuse every connection, and the worker retried forever."""
    worker = spawn_worker("--burst", env=_through(bouncer))
    assert worker.wait(30) == 1
    assert "unsupported startup parameter" in worker.log()
    assert "--transaction-pooling" in worker.log()


def test_poll_only_drain_prepares_nothing_on_the_server(
    app: currant.App, database_dsn: str, spawn_worker: Any, db: Any
) -> None:
    """One server connection behind the pooler (pool_size 1) shows every prepared
    statement any client left there: none may be left, whatever ran through it."""
    bouncer = PgBouncer(database_dsn, pool_size=1)
    try:
        producer = currant.App(bouncer.dsn(), schema=app.schema, transaction_pooling=True)
        # Far more than psycopg's prepare threshold (5) on each of the pool's connections.
        ids = [producer.enqueue("add", (1, n)) for n in range(30)]
        ids += producer.enqueue_many("noop", [()] * 2000)
        worker = spawn_worker("--burst", "--transaction-pooling", "--heartbeat", "0.5", env=_through(bouncer))
        assert worker.wait(60) == 0, worker.log()[-3000:]
        assert "poll-only" in worker.log()
        assert state_counts(db, app.schema) == {"succeeded": len(ids)}
        assert producer.get_job(ids[3]).result == 4
        with psycopg.connect(bouncer.dsn(), autocommit=True) as conn:
            prepared = conn.execute("SELECT name, statement FROM pg_prepared_statements").fetchall()
        producer.close()
        assert prepared == []
    finally:
        bouncer.close()


def test_listen_dsn_wakes_a_pooled_worker(
    app: currant.App, pooled_app: currant.App, bouncer: PgBouncer, database_dsn: str, spawn_worker: Any, db: Any
) -> None:
    """Claims through the pooler, LISTEN on the direct connection: a job is
    picked up on its notification, long before the poll or heartbeat."""
    worker = spawn_worker(
        "--transaction-pooling",
        "--poll-interval",
        "30",
        "--heartbeat",
        "20",
        "--dead-after",
        "60",
        env=_through(bouncer, "CURRANT_LISTEN_DSN", database_dsn),
    )
    wait_listening(db, app.channel)
    enqueued = time.monotonic()
    job_id = pooled_app.enqueue("add", (2, 3))
    wait_for(lambda: pooled_app.get_job(job_id).state == "succeeded", timeout=10, message="the job done")
    assert time.monotonic() - enqueued < 5, "picked up by polling, not by the notification"
    assert "poll-only" not in worker.log()
    assert "(transaction pooling)" in worker.log()


@pytest.mark.parametrize("listen", ["listen-dsn", "poll-only"])
def test_pgbouncer_restart_mid_drain_loses_nothing(
    app: currant.App,
    pooled_app: currant.App,
    bouncer: PgBouncer,
    database_dsn: str,
    spawn_worker: Any,
    db: Any,
    listen: str,
) -> None:
    """Two worker processes (``--processes 2``: the children claim and complete
    through PgBouncer; the supervisor LISTENs on the direct ``--listen-dsn``,
    or nobody listens and they poll) drain 4,000 jobs; PgBouncer is killed and
    started again once a third are done. Every job ends succeeded; every side
    effect is there; a job runs twice only if it was in flight at the restart."""
    total, concurrency = 4000, 4
    pooled_app.enqueue_many("record", [(f"k{n}",) for n in range(total)])
    # The side effects go direct: only the worker's own path is cut.
    env = _through(bouncer, "CURRANT_TEST_LEDGER_DSN", database_dsn)
    if listen == "listen-dsn":
        env["CURRANT_LISTEN_DSN"] = database_dsn
    args = ("--burst", "--transaction-pooling", "--concurrency", str(concurrency), "--batch-size", "100")
    workers = [spawn_worker(*args, "--processes", "2", env=env)]
    count = f'SELECT count(*) FROM "{app.schema}".ledger'
    wait_for(lambda: db.execute(count).fetchone()[0] >= total // 3, timeout=60, message="a third done")
    bouncer.restart()
    for worker in workers:
        assert worker.wait(90) == 0, worker.log()[-3000:]
    assert any("connection lost" in worker.log() for worker in workers), "the restart went unnoticed"
    assert ("poll-only" in workers[0].log()) == (listen == "poll-only")
    assert state_counts(db, app.schema) == {"succeeded": total}
    runs = Counter(key for key, _pid, _attempt in ledger(db, app.schema))
    assert set(runs) == {f"k{n}" for n in range(total)}
    duplicates = sum(n - 1 for n in runs.values())
    print(f"\nPgBouncer restart mid-drain ({listen}): {total} jobs, {duplicates} ran twice")
    # At most what the two workers had running at that moment.
    assert duplicates <= 2 * concurrency


def test_work_settings_travel_with_each_transaction_and_stay_there(app: currant.App, database_dsn: str) -> None:
    """Through a one-server pooler, a pooled work link's round trips see the
    planner settings, and the next client on the same server connection does
    not (SET LOCAL, never a session SET). The settings are the direct path's."""
    import asyncio

    from currant.worker.links import WORK_CONNECTION_OPTIONS, Link

    def give_up(what: str, seconds: float) -> None:
        return None

    bouncer = PgBouncer(database_dsn, pool_size=1)
    query = "SELECT current_setting('enable_nestloop'), current_setting('plan_cache_mode')"

    async def through_link() -> Any:
        link = Link(
            "claims",
            bouncer.dsn(),
            timeout=10,
            give_up=give_up,
            options=WORK_CONNECTION_OPTIONS,
            pooled=True,
            begin=app.sql["begin_work"],
        )
        try:
            return await link.run(lambda conn: _fetch(conn, query))
        finally:
            await link.close()

    try:
        assert asyncio.run(through_link()) == ("off", "auto")
        with psycopg.connect(bouncer.dsn(), autocommit=True) as conn:
            assert conn.execute(query).fetchone() == ("on", "auto")
    finally:
        bouncer.close()
    with psycopg.connect(database_dsn, autocommit=True, options=WORK_CONNECTION_OPTIONS) as conn:
        direct = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE source = 'client'").fetchall())
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(app.sql["begin_work"])
        local = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE source = 'session'").fetchall())
    assert direct == local and len(direct) == 5


async def _fetch(conn: Any, query: str) -> Any:
    cur = await conn.execute(query)
    return await cur.fetchone()


def test_the_archive_through_the_pooler(
    app: currant.App, pooled_app: currant.App, bouncer: PgBouncer, spawn_worker: Any, db: Any
) -> None:
    """Turned on through PgBouncer while a pooled worker runs: its rotation
    (a function with its own settings) learns it, and every success moves to
    the archive through the pooler, result and all."""
    from currant import archive

    spawn_worker("--transaction-pooling", "--heartbeat", "0.1", "--poll-interval", "0.1", env=_through(bouncer))
    first = pooled_app.enqueue("add", (1, 1))
    wait_for(lambda: pooled_app.get_job(first).state == "succeeded", message="the first job done")
    pooled_app.run_plan(archive.enable(pooled_app.sql, 3600), write=True)

    def archived() -> bool:
        job_id = pooled_app.enqueue("add", (2, 3))
        wait_for(lambda: pooled_app.get_job(job_id).state == "succeeded", message=f"job {job_id} done")
        return db.execute(
            f'SELECT result IS NOT NULL FROM "{app.schema}".archive WHERE id = %s', (job_id,)
        ).fetchone() == (True,)

    wait_for(archived, message="a job archived", interval=0.2)
    assert pooled_app.get_job(first).result == 2
    assert db.execute(f'SELECT id FROM "{app.schema}".archive WHERE id = %s', (first,)).fetchone() is None
