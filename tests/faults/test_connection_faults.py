"""Connection and server faults on a test-owned PostgreSQL cluster: terminated
backends, a killed LISTEN session, fast and crash restarts under a continuous
producer, a connection cut while an enqueue commits, and half-open TCP.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import currant
from tests.conftest import wait_for
from tests.faults.checker import assert_no_loss, check_schema
from tests.faults.helpers import Producer, counts, ledger_rows, retrying, wait_all_succeeded
from tests.faults.proxy import TcpProxy


def _enqueue_keys(app: currant.App, task: str, keys: list[str], *extra: Any) -> dict[int, str]:
    ids = app.enqueue_many(task, [(key, *extra) for key in keys])
    return dict(zip(ids, keys, strict=True))


def test_backends_terminated_at_5_hz(
    cluster_app: currant.App, cluster_db: Any, cluster_spawn: Any, cluster_schema: str, pg_cluster: Any
) -> None:
    """pg_terminate_backend of every worker session 5 times a second while 3,000 jobs drain."""
    schema = cluster_schema
    keys = [f"k{i}" for i in range(3000)]
    key_of = _enqueue_keys(cluster_app, "record_slowly", keys, 0.004)
    # dead-after 5 s: heartbeats fail while their connection is being killed;
    # this test is about reconnection, not about lease expiry.
    worker = cluster_spawn("--batch-size", "100", "--heartbeat", "0.2", "--dead-after", "5", "--poll-interval", "0.2")
    wait_for(lambda: counts(cluster_db, schema).get("succeeded", 0) >= 50, message="worker running")
    terminated = rounds = 0
    started = time.monotonic()
    while time.monotonic() - started < 4 and counts(cluster_db, schema).get("succeeded", 0) < len(keys):
        terminated += pg_cluster.terminate_backends()
        rounds += 1
        time.sleep(0.2)  # the scenario: kills at 5 Hz
        assert worker.popen.poll() is None, worker.log()[-3000:]
    assert terminated >= 10, f"only {terminated} sessions terminated in {rounds} rounds"
    wait_all_succeeded(cluster_db, schema, len(keys))
    assert worker.popen.poll() is None, "the worker never exits on a lost connection"
    history = assert_no_loss(check_schema(cluster_db, schema, keys, key_of=key_of), max_duplicates=0)
    assert "reconnecting" in worker.log()
    print(f"5 Hz kills: {terminated} sessions in {rounds} rounds; duplicates {history.extra_executions}")


def _listen_pid(conn: Any) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'currant-worker' AND query LIKE 'LISTEN%'"
    ).fetchone()
    return row[0] if row else None


def _latency(app: currant.App, conn: Any, schema: str, key: str) -> float:
    job_id = app.enqueue("record", (key,))
    wait_for(lambda: app.get_job(job_id).state == "succeeded", timeout=20, message=f"job {key} done")  # type: ignore[union-attr]
    row = conn.execute(
        f'SELECT extract(epoch FROM started_at - enqueued_at) FROM "{schema}".jobs WHERE id = %s', (job_id,)
    ).fetchone()
    return float(row[0])


def test_listen_connection_killed_alone(
    cluster_app: currant.App, cluster_db: Any, cluster_spawn: Any, cluster_schema: str
) -> None:
    """The LISTEN session dies alone: work continues, and the listener comes back."""
    poll = 3.0
    cluster_spawn("--poll-interval", str(poll), "--heartbeat", "5", "--dead-after", "30")
    first = wait_for(lambda: _listen_pid(cluster_db.conn()), message="LISTEN session")
    assert _latency(cluster_app, cluster_db, cluster_schema, "warm") < 1.0
    cluster_db.execute("SELECT pg_terminate_backend(%s)", (first,))
    assert _latency(cluster_app, cluster_db, cluster_schema, "during") < poll + 1.0
    second = wait_for(
        lambda: (pid := _listen_pid(cluster_db.conn())) not in (None, first) and pid, message="a new LISTEN session"
    )
    assert second != first
    samples = [_latency(cluster_app, cluster_db, cluster_schema, f"after{i}") for i in range(5)]
    # Each would wait for the 3 s poll without a working LISTEN.
    assert max(samples) < 1.0, samples
    print(
        f"wake latency after the listener reconnected: median {statistics.median(samples) * 1000:.1f} ms,"
        f" max {max(samples) * 1000:.1f} ms"
    )


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_under_load(
    pg_cluster: Any, cluster_app: currant.App, cluster_db: Any, cluster_spawn: Any, cluster_schema: str, mode: str
) -> None:
    """pg_ctl restart -m fast, or a crash (stop -m immediate, start), with a producer enqueueing
    all along: no acknowledged enqueue lost, the workers come back by themselves."""
    schema = cluster_schema
    args = ("--batch-size", "50", "--heartbeat", "0.5", "--dead-after", "10", "--poll-interval", "0.2")
    workers = [cluster_spawn(*args) for _ in range(2)]
    producer_app = currant.App(pg_cluster.dsn, schema=schema)
    producer = Producer(producer_app)
    producer.start()
    wait_for(lambda: counts(cluster_db, schema).get("succeeded", 0) >= 100, message="jobs flowing")
    if mode == "fast":
        pg_cluster.restart_fast()
    else:
        pg_cluster.crash_restart(down_for=0.5)
    ready = time.monotonic()
    db_ready = retrying(lambda: cluster_db.execute("SELECT now()").fetchone()[0])
    wait_for(
        lambda: (
            retrying(
                lambda: cluster_db.execute(
                    f'SELECT count(*) FROM "{schema}".jobs WHERE finished_at > %s', (db_ready,)
                ).fetchone()[0]
            )
            > 0
        ),
        timeout=30,
        message="a job completed after the restart",
    )
    recovery = time.monotonic() - ready
    # The producer goes on until it has had 100 more enqueues acknowledged by the restarted server.
    acked_at_recovery = len(producer.acked)
    wait_for(
        lambda: len(producer.acked) >= acked_at_recovery + 100,
        timeout=30,
        message="100 enqueues acknowledged after the restart",
    )
    producer.stop.set()
    producer.join(60)
    assert not producer.is_alive()
    producer_app.close()
    total = len(retrying(lambda: cluster_db.execute(f'SELECT id FROM "{schema}".jobs').fetchall()))
    wait_all_succeeded(cluster_db, schema, total, timeout=60)
    for worker in workers:
        assert worker.popen.poll() is None, worker.log()[-3000:]
    history = check_schema(cluster_db, schema, producer.acked, attempted=producer.attempted)
    # A retried unknown outcome may enqueue a key twice once its first job
    # finished (a unique key is released at the end); a ledger insert whose
    # commit was cut may be written twice. Both only around the restart.
    assert_no_loss(history, max_duplicates=len(producer.unknown) + 8)
    print(
        f"restart {mode}: acked={len(producer.acked)} unknown={len(producer.unknown)} errors={producer.errors}"
        f" recovered={len(history.recovered)} duplicates={history.extra_executions}"
        f" first completion {recovery:.2f} s after the server accepted connections"
    )
    assert recovery < 15


# -- a connection cut while the enqueue commits -------------------------------------


@pytest.fixture
def proxy(pg_cluster: Any) -> Any:
    instance = TcpProxy("127.0.0.1", pg_cluster.port)
    yield instance
    instance.close()


def _via(proxy: TcpProxy, dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    params.update(host="127.0.0.1", port=str(proxy.port))
    return make_conninfo(**params)


def test_cut_during_enqueue_commit_is_outcome_unknown(
    proxy: TcpProxy, pg_cluster: Any, cluster_app: currant.App, cluster_db: Any, cluster_schema: str
) -> None:
    app = currant.App(_via(proxy, pg_cluster.dsn), schema=cluster_schema)
    try:
        app.stats()  # pool and schema check done before the fault is armed
        proxy.cut_after(b'INSERT INTO "' + cluster_schema.encode())
        with pytest.raises(currant.EnqueueOutcomeUnknown):
            app.enqueue("record", ("a",), unique_key="one")
        assert proxy.cut_event.is_set()
        rows = wait_for(
            lambda: cluster_db.execute(
                f'SELECT id FROM "{cluster_schema}".jobs WHERE unique_key = %s', ("one",)
            ).fetchall(),
            timeout=10,
            message="the cut INSERT committed on the server",
        )
        again = app.enqueue("record", ("a",), unique_key="one")
        assert [again] == [row[0] for row in rows], "the retry found the job the lost answer created"
    finally:
        app.close()


def test_cut_during_bulk_enqueue_commit(
    proxy: TcpProxy, pg_cluster: Any, cluster_app: currant.App, cluster_db: Any, cluster_schema: str
) -> None:
    app = currant.App(_via(proxy, pg_cluster.dsn), schema=cluster_schema)
    items = [currant.Item(args=(f"b{i}",), unique_key=f"b{i}") for i in range(500)]
    try:
        app.stats()
        proxy.cut_after(b"COMMIT\x00")  # the simple-query COMMIT, not "ON COMMIT DELETE ROWS"
        with pytest.raises(currant.EnqueueOutcomeUnknown):
            app.enqueue_many("record", items)
        wait_for(
            lambda: cluster_db.execute(f'SELECT count(*) FROM "{cluster_schema}".jobs').fetchone()[0] == 500,
            timeout=10,
            message="the cut COMMIT took effect",
        )
        ids = app.enqueue_many("record", items)
        stored = dict(cluster_db.execute(f'SELECT unique_key, id FROM "{cluster_schema}".jobs').fetchall())
        assert ids == [stored[f"b{i}"] for i in range(500)]
        assert cluster_db.execute(f'SELECT count(*) FROM "{cluster_schema}".jobs').fetchone()[0] == 500
    finally:
        app.close()


def test_cut_during_async_enqueue_is_outcome_unknown(
    proxy: TcpProxy, pg_cluster: Any, cluster_app: currant.App, cluster_db: Any, cluster_schema: str
) -> None:
    app = currant.App(_via(proxy, pg_cluster.dsn), schema=cluster_schema)

    async def scenario() -> tuple[int, list[Any]]:
        try:
            await app.astats()
            proxy.cut_after(b'INSERT INTO "' + cluster_schema.encode())
            with pytest.raises(currant.EnqueueOutcomeUnknown):
                await app.aenqueue("record", ("x",), unique_key="async-one")
            rows = wait_for(
                lambda: cluster_db.execute(
                    f'SELECT id FROM "{cluster_schema}".jobs WHERE unique_key = %s', ("async-one",)
                ).fetchall(),
                timeout=10,
            )
            return await app.aenqueue("record", ("x",), unique_key="async-one"), rows
        finally:
            await app.aclose()

    again, rows = asyncio.run(scenario())
    assert [again] == [row[0] for row in rows]


# -- half-open TCP ----------------------------------------------------------------------


def _half_open(
    proxy: TcpProxy,
    pg_cluster: Any,
    cluster_app: currant.App,
    cluster_db: Any,
    cluster_spawn: Any,
    schema: str,
    budget: float,
    timing: tuple[str, ...],
) -> Any:
    """The worker reaches the server through the proxy, which then blackholes every
    session it has open; a job enqueued after that must run within ``budget`` s.
    (The tasks' ledger writes go straight to the server: only the worker's own
    sessions are cut off.) Returns the worker."""
    worker = cluster_spawn(*timing, dsn=_via(proxy, pg_cluster.dsn), env={"CURRANT_TEST_LEDGER_DSN": pg_cluster.dsn})
    first = cluster_app.enqueue("record", ("before",))
    wait_for(lambda: cluster_app.get_job(first).state == "succeeded", timeout=20)  # type: ignore[union-attr]
    # All three of the worker's sessions (claims, completions with the heartbeat, LISTEN) are open through the proxy.
    wait_for(
        lambda: sum(not pair.closed for pair in list(proxy.pairs)) >= 3,
        timeout=20,
        message="the worker's three sessions open",
    )
    proxy.blackhole()  # every session of the worker is now half-open; new ones work
    blackholed_at = time.monotonic()
    job = cluster_app.enqueue("record", ("after",))
    try:
        wait_for(
            lambda: cluster_app.get_job(job).state == "succeeded",
            timeout=budget,  # type: ignore[union-attr]
            interval=0.2,
            message=f"a job run within {budget} s of the blackhole",
        )
    finally:
        print(
            f"half-open: state after {time.monotonic() - blackholed_at:.1f} s:"
            f" {cluster_app.get_job(job).state}; worker log tail:\n{worker.log()[-1500:]}"
        )  # type: ignore[union-attr]
    assert worker.popen.poll() is None
    assert [key for key, _, _ in ledger_rows(cluster_db, schema)] == ["before", "after"]
    return worker


def test_half_open_tcp_worker_recovers_fast(
    proxy: TcpProxy, pg_cluster: Any, cluster_app: currant.App, cluster_db: Any, cluster_spawn: Any, cluster_schema: str
) -> None:
    """Fast tier: a blackholed worker must be working again within 15 s (heartbeat 0.5 s, dead-after 3 s)."""
    _half_open(
        proxy,
        pg_cluster,
        cluster_app,
        cluster_db,
        cluster_spawn,
        cluster_schema,
        budget=15,
        timing=("--heartbeat", "0.5", "--dead-after", "3", "--poll-interval", "0.5"),
    )


@pytest.mark.soak
def test_half_open_tcp_worker_recovers_with_default_timings(
    proxy: TcpProxy, pg_cluster: Any, cluster_app: currant.App, cluster_db: Any, cluster_spawn: Any, cluster_schema: str
) -> None:
    """Soak tier: the production timings (heartbeat 5 s, dead-after 30 s, so
    --db-timeout 30 s, poll 1 s). TCP keepalives cannot see a blackhole (the
    proxy still answers them): only the round-trip timeout (30 s) finds it. A
    round trip that waits on a dead session is abandoned after 30 s and retried
    on a new connection: the job runs within 120 s, once, a later job runs at
    once, and the worker says why it reconnected."""
    worker = _half_open(
        proxy, pg_cluster, cluster_app, cluster_db, cluster_spawn, cluster_schema, budget=120, timing=()
    )
    job = cluster_app.enqueue("record", ("later",))
    wait_for(
        lambda: cluster_app.get_job(job).state == "succeeded",
        timeout=10,  # type: ignore[union-attr]
        message="a job enqueued after the recovery runs at once",
    )
    assert "no answer within 30 s" in worker.log(), worker.log()[-3000:]
    rows = cluster_db.execute(f'SELECT attempts, rescues FROM "{cluster_schema}".jobs').fetchall()
    assert rows == [(1, 0)] * 3, rows
    assert [key for key, _, _ in ledger_rows(cluster_db, cluster_schema)] == ["before", "after", "later"]
