"""The core path end to end against a real PostgreSQL: enqueue, claim, run, complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import psycopg
import pytest

import currant
from currant import codec, enqueue
from currant.sql import migrations, queries
from currant.worker.claimer import in_claim_order
from tests.conftest import ROOT, ledger, state_counts, wait_for, wait_listening


def test_one_job_round_trip(app: currant.App, spawn_worker: Any) -> None:
    job_id = app.enqueue("add", (1, 2))
    before = app.get_job(job_id)
    assert before is not None and before.state == "queued" and before.attempts == 0
    worker = spawn_worker("--burst")
    assert worker.wait() == 0, worker.log()
    job = app.get_job(job_id)
    assert job is not None
    assert job.state == "succeeded"
    assert job.result == 3
    assert job.attempts == 1
    assert job.error is None
    assert job.enqueued_at is not None and job.started_at is not None and job.finished_at is not None
    assert job.enqueued_at <= job.started_at <= job.finished_at


def test_args_kwargs_and_unicode_round_trip(app: currant.App, spawn_worker: Any) -> None:
    job_id = app.enqueue("echo", (1, "ünï", b"\x00bytes", [1.5, None]), {"k": {"nested": True}})
    assert spawn_worker("--burst").wait() == 0
    job = app.get_job(job_id)
    assert job is not None and job.state == "succeeded"
    assert job.result == [[1, "ünï", b"\x00bytes", [1.5, None]], {"k": {"nested": True}}]


def test_enqueue_many_100k_all_run(app: currant.App, spawn_worker: Any, db: psycopg.Connection[Any]) -> None:
    ids = app.enqueue_many("noop", [()] * 100_000)
    assert len(ids) == 100_000 and len(set(ids)) == 100_000
    assert ids == sorted(ids)
    worker = spawn_worker("--burst")
    assert worker.wait(120) == 0, worker.log()
    row = db.execute(
        f"SELECT count(*), count(*) FILTER (WHERE state = 'succeeded' AND attempts = 1) FROM \"{app.schema}\".jobs"
    ).fetchone()
    assert row == (100_000, 100_000)


def test_enqueue_many_rows_across_batches_and_chunks(
    app: currant.App, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are made a step at a time while each batch's COPY streams, and items
    with their own options are swapped in by position: every row must still
    land with its own id, arguments and options, in order."""
    monkeypatch.setattr(enqueue, "ENQUEUE_BATCH", 4_999)  # batches that end inside a row-building step
    monkeypatch.setattr(enqueue, "COPY_CHUNK_BYTES", 4_096)
    special = {0, 1_999, 2_000, 4_998, 4_999, 5_001, 9_998, 11_999}
    items: list[Any] = [
        currant.Item(args=(i,), priority=i % 5 + 1, delay=60 if i % 2 else None) if i in special else (i,)
        for i in range(12_000)
    ]
    ids = app.enqueue_many("echo", items)
    assert len(ids) == len(set(ids)) == 12_000 and ids == sorted(ids)
    rows = db.execute(
        f'SELECT id, payload, priority, state::text FROM "{app.schema}".jobs WHERE id = ANY(%s) ORDER BY id', (ids,)
    ).fetchall()
    got = [(job_id, codec.unpack_payload(payload)[0], priority, state) for job_id, payload, priority, state in rows]
    want = [
        (job_id, (i,), i % 5 + 1 if i in special else 0, "scheduled" if i in special and i % 2 else "queued")
        for i, job_id in enumerate(ids)
    ]
    assert got == want


def test_enqueue_many_item_forms(app: currant.App, spawn_worker: Any) -> None:
    ids = app.enqueue_many(
        "echo",
        [(1,), ((2,), {"x": 3}), [4, 5], currant.Item(args=(6,), kwargs={"y": 7}, priority=5)],
    )
    assert spawn_worker("--burst").wait() == 0
    results = [app.get_job(job_id).result for job_id in ids]  # type: ignore[union-attr]
    assert results == [[[1], {}], [[2], {"x": 3}], [[4, 5], {}], [[6], {"y": 7}]]


def test_three_workers_run_20k_jobs_exactly_once(
    app: currant.App, spawn_worker: Any, db: psycopg.Connection[Any]
) -> None:
    app.enqueue_many("record", [(f"job-{i}",) for i in range(20_000)])
    workers = [spawn_worker("--burst", "--batch-size", "200") for _ in range(3)]
    for worker in workers:
        assert worker.wait(180) == 0, worker.log()
    entries = ledger(db, app.schema)
    counts = Counter(key for key, _pid, _attempt in entries)
    assert len(counts) == 20_000
    assert max(counts.values()) == 1, [k for k, c in counts.items() if c > 1][:5]
    assert state_counts(db, app.schema) == {"succeeded": 20_000}
    # The work was actually shared.
    assert len({pid for _key, pid, _attempt in entries}) == 3


def test_idle_worker_picks_up_by_notify(app: currant.App, spawn_worker: Any, db: psycopg.Connection[Any]) -> None:
    # Poll and heartbeat far beyond the 1 s budget: only NOTIFY can be this fast.
    worker = spawn_worker("--poll-interval", "30", "--heartbeat", "30", "--dead-after", "90")
    wait_listening(db, app.channel)  # its start-up claim comes after LISTEN: later jobs need the notification
    for _ in range(3):
        enqueued = time.monotonic()
        job_id = app.enqueue("noop")
        wait_for(lambda: app.get_job(job_id).state == "succeeded", timeout=5, message="pickup")  # type: ignore[union-attr]
        assert time.monotonic() - enqueued < 1.0
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_transactional_enqueue(
    app: currant.App,
    spawn_worker: Any,
    database_dsn: str,
    db: psycopg.Connection[Any],
) -> None:
    with psycopg.connect(database_dsn) as conn:
        app.enqueue("record", ("rolled-back",), connection=conn)
        app.enqueue_many("record", [("rolled-back-many",)], connection=conn)
        conn.rollback()
    assert state_counts(db, app.schema) == {}
    with psycopg.connect(database_dsn) as conn:
        job_id = app.enqueue("record", ("committed",), connection=conn)
        # Not visible to others before the commit.
        assert app.get_job(job_id) is None
        conn.commit()
    assert spawn_worker("--burst").wait() == 0
    assert [key for key, _, _ in ledger(db, app.schema)] == ["committed"]


def test_graceful_shutdown_returns_prefetched_jobs(
    app: currant.App, spawn_worker: Any, db: psycopg.Connection[Any]
) -> None:
    ids = app.enqueue_many("record_slowly", [(f"k{i}", 0.3) for i in range(40)])
    worker = spawn_worker("--concurrency", "1")
    wait_for(lambda: ledger(db, app.schema), timeout=20, message="first job done")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()
    done = {key for key, _, _ in ledger(db, app.schema)}
    rows = db.execute(
        f'SELECT id, state::text, attempts, worker_id, started_at FROM "{app.schema}".jobs ORDER BY id'
    ).fetchall()
    assert [r[0] for r in rows] == ids
    succeeded = [r for r in rows if r[1] == "succeeded"]
    returned = [r for r in rows if r[1] == "queued"]
    assert len(succeeded) == len(done) and len(succeeded) + len(returned) == 40
    assert returned, "expected prefetched jobs to be handed back"
    # Untouched: attempt refunded, no owner, never started.
    assert all(r[2] == 0 and r[3] is None and r[4] is None for r in returned)
    # The worker deregistered.
    assert db.execute(f'SELECT count(*) FROM "{app.schema}".workers').fetchone() == (0,)


def test_raising_handler_fails_with_traceback(app: currant.App, spawn_worker: Any) -> None:
    job_id = app.enqueue("fail", ("kaboom",), max_attempts=1)
    assert spawn_worker("--burst").wait() == 0
    job = app.get_job(job_id)
    assert job is not None and job.state == "failed" and job.attempts == 1
    assert job.error is not None
    assert job.error.startswith("ValueError: kaboom")
    assert "Traceback (most recent call last)" in job.error and "in fail" in job.error


def test_unencodable_arguments_raise_before_io(app: currant.App, db: psycopg.Connection[Any]) -> None:
    with pytest.raises(TypeError, match="argument 1 \\(object\\)"):
        app.enqueue("echo", (1, object()))
    with pytest.raises(TypeError, match="keyword argument 'when'"):
        app.enqueue("echo", (), {"when": {1, 2}})
    with pytest.raises(TypeError, match="item 2: argument 0"):
        app.enqueue_many("echo", [(1,), (2,), (object(),), (4,)])
    assert state_counts(db, app.schema) == {}


def test_payload_cap_refused_before_io(database_dsn: str, schema_name: str, db: psycopg.Connection[Any]) -> None:
    small = currant.App(database_dsn, schema=schema_name, max_payload_size=1000)
    small.migrate()
    with pytest.raises(currant.PayloadTooLarge, match="over the 1000-byte cap"):
        small.enqueue("echo", (b"x" * 2000,))
    assert state_counts(db, schema_name) == {}
    small.close()


def test_bad_names_are_refused_or_stored_verbatim(app: currant.App) -> None:
    for bad in ("", "x" * 300, "nul\x00name"):
        with pytest.raises(ValueError):
            app.enqueue("noop", queue=bad)
        with pytest.raises(ValueError):
            app.enqueue(bad)
    odd = "q'; DROP TABLE jobs; --\"ü"
    job_id = app.enqueue(odd, queue=odd)
    job = app.get_job(job_id)
    assert job is not None and job.task == odd and job.queue == odd


def test_migrate_twice_and_concurrently(database_dsn: str, schema_name: str) -> None:
    script = "import sys, currant; app = currant.App(sys.argv[1], schema=sys.argv[2]); print(app.migrate())"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, database_dsn, schema_name],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    applied = sorted(out.strip() for out, _ in outputs)
    assert applied == [str([m.version for m in migrations(schema_name)]), "[]", "[]"]
    again = currant.App(database_dsn, schema=schema_name)
    assert again.migrate() == []
    assert again.enqueue("noop") > 0
    again.close()


def test_upgrade_from_0001_keeps_queued_jobs_claimable_in_order(database_dsn: str, schema_name: str) -> None:
    """A schema left at migration 0001 with jobs waiting: migrating rebuilds the
    claim indexes, and the claim still takes them by priority, then FIFO."""
    sql = queries(schema_name)
    first = migrations(schema_name)[0]
    jobs = f'"{schema_name}".jobs'
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(f'CREATE SCHEMA "{schema_name}"')
            conn.execute(sql["migrations_table"])
            conn.execute(first.text.encode())
            conn.execute(sql["migration_record"], {"version": first.version, "name": first.name})
        # Enqueued by a Currant of that schema: low, three plain ones, high.
        ids = [
            row[0]
            for row in conn.execute(
                f"INSERT INTO {jobs} (queue, task, payload, priority) SELECT 'default', 'noop', %s, p"
                " FROM unnest(ARRAY[-1, 0, 0, 0, 3]) WITH ORDINALITY AS t(p, n) ORDER BY n RETURNING id",
                (codec.encode_payload((), None, 1 << 20),),
            )
        ]
    app = currant.App(database_dsn, schema=schema_name)
    try:
        assert app.migrate() == [m.version for m in migrations(schema_name)][1:]
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            registration = {"hostname": "test", "pid": 1, "queues": ["default"], "concurrency": 1}
            (worker,) = conn.execute(sql["register_worker"], registration).fetchone()  # type: ignore[misc]
            claimed = conn.execute(sql["claim"], {"worker": worker, "queue": "default", "limit": 10}).fetchall()
        assert [row[0] for row in in_claim_order(claimed)] == [ids[4], *ids[1:4], ids[0]]
    finally:
        app.close()


@pytest.mark.parametrize("column", ["queue", "task"])
def test_the_database_refuses_names_the_client_would(
    app: currant.App, db: psycopg.Connection[Any], column: str
) -> None:
    """Rows written by other means than Currant's client meet the same rule:
    1-200 characters, counted as characters, not bytes."""
    jobs = f'"{app.schema}".jobs'
    insert = f"INSERT INTO {jobs} (queue, task, payload) VALUES (%(queue)s, %(task)s, '\\x929080')"
    for name in ("q" * 200, "é" * 200, "𝄞" * 200):  # 200, 400 and 800 bytes
        db.execute(insert, {"queue": "default", "task": "noop", column: name})
    for name in ("", "q" * 201, "é" * 201):
        with pytest.raises(psycopg.errors.CheckViolation, match=f"jobs_{column}_name"):
            db.execute(insert, {"queue": "default", "task": "noop", column: name})


def test_unknown_task_is_retried_not_lost(app: currant.App, spawn_worker: Any) -> None:
    job_id = app.enqueue("no.such.task")
    assert spawn_worker("--burst").wait() == 0
    job = app.get_job(job_id)
    assert job is not None
    assert job.state == "retrying" and job.attempts == 1
    assert "UnknownTask: task 'no.such.task' is not registered" in (job.error or "")


def test_malformed_payload_fails_only_that_job(
    app: currant.App,
    spawn_worker: Any,
    db: psycopg.Connection[Any],
) -> None:
    good = app.enqueue_many("record", [(f"g{i}",) for i in range(5)])
    bad = app.enqueue("record", ("victim",))
    db.execute(f'UPDATE "{app.schema}".jobs SET payload = %s WHERE id = %s', (b"\x92\x91\xc1", bad))
    assert spawn_worker("--burst").wait() == 0
    job = app.get_job(bad)
    assert job is not None and job.state == "failed" and job.attempts == 1
    assert (job.error or "").startswith("PayloadError:")
    assert all(app.get_job(j).state == "succeeded" for j in good)  # type: ignore[union-attr]


def test_async_tasks_run_on_the_loop(app: currant.App, spawn_worker: Any, db: psycopg.Connection[Any]) -> None:
    ids = app.enqueue_many("arecord", [(f"a{i}",) for i in range(50)], queue="async")
    assert spawn_worker("--burst", "--queues", "async").wait() == 0
    assert [app.get_job(j).result for j in ids] == [f"a{i}" for i in range(50)]  # type: ignore[union-attr]
    assert len(ledger(db, app.schema)) == 50


def test_handler_raising_base_exception_does_not_kill_worker(app: currant.App, spawn_worker: Any) -> None:
    a = app.enqueue("base_exception", ("exit",))
    b = app.enqueue("base_exception", ("interrupt",))
    c = app.enqueue("add", (2, 2))
    assert spawn_worker("--burst").wait() == 0
    assert app.get_job(a).error.startswith("SystemExit")  # type: ignore[union-attr]
    assert app.get_job(b).error.startswith("KeyboardInterrupt")  # type: ignore[union-attr]
    assert app.get_job(c).result == 4  # type: ignore[union-attr]


def test_async_api(app: currant.App, spawn_worker: Any) -> None:
    import asyncio

    async def main() -> tuple[int, list[int]]:
        one = await app.aenqueue("add", (5, 6))
        many = await app.aenqueue_many("add", [(1, 1), (2, 2)])
        await app.aclose()
        return one, many

    one, many = asyncio.run(main())
    assert spawn_worker("--burst").wait() == 0
    assert [app.get_job(j).result for j in [one, *many]] == [11, 2, 4]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tests.apps.jobs:app", "--concurrency", "0"], "--concurrency: expected a whole number of at least 1"),
        (["tests.apps.jobs:app", "--poll-interval", "soon"], "--poll-interval: expected a number of seconds"),
        (["no_such_module_xyz:app"], "cannot import module 'no_such_module_xyz'"),
        (["tests.apps.jobs:nothing"], "is nothing, not a currant.App"),
        (["tests.apps.jobs"], "expected MODULE:APP"),
        (["tests.apps.jobs:app", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str, database_dsn: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "currant.worker", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "CURRANT_DSN": database_dsn, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# Every argument of ``python -m currant.worker`` (README, "The worker"), with
# the default the README gives it (None: none stated, or not a single value).
WORKER_ARGUMENTS = {
    "MODULE:APP": None,
    "--dsn": None,
    "--transaction-pooling": "$CURRANT_TRANSACTION_POOLING",
    "--listen-dsn": "$CURRANT_LISTEN_DSN",
    "--schema": None,
    "--queues": None,
    "--concurrency": "4",
    "--burst": None,
    "--poll-interval": "1",
    "--batch-size": "1000",
    "--heartbeat": "5",
    "--dead-after": "30",
    "--shutdown-grace": "30",
    "--db-timeout": "--dead-after",
    "--max-rescues": "3",
    "--keep-succeeded": "86400",
    "--keep-failed": "604800",
    "--processes": "1",
    "--log-level": "INFO",
    "--log-format": "text",
    "--metrics-port": None,
    "--metrics-host": "0.0.0.0",
}


def _help_entries(text: str) -> dict[str, tuple[str, str]]:
    """argparse help -> {argument name: (invocation, help text joined into one line)}."""
    entries: dict[str, tuple[str, str]] = {}
    names: list[str] = []
    in_section = False
    for line in text.splitlines():
        if line and not line.startswith(" "):  # a section header, the usage or the description
            in_section = line.endswith(":") and not line.startswith("usage:")
            names = []
        elif in_section and line.startswith("  ") and not line.startswith("   "):
            invocation, _, help_text = line.strip().partition("  ")
            names = [part.split()[0] for part in invocation.split(", ")]
            entries.update({name: (invocation, help_text.strip()) for name in names})
        elif in_section and names and line.strip():
            entries.update({name: (entries[name][0], f"{entries[name][1]} {line.strip()}".strip()) for name in names})
    return entries


def test_cli_help_explains_every_option() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "currant.worker", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert proc.returncode == 0, proc.stderr
    entries = _help_entries(proc.stdout)
    assert set(entries) - {"-h", "--help"} == set(WORKER_ARGUMENTS), sorted(entries)
    for name, default in WORKER_ARGUMENTS.items():
        invocation, help_text = entries[name]
        assert len(help_text) > 15, (name, help_text)
        if default is not None:
            assert f"default: {default})" in help_text, (name, help_text)


def test_concurrent_enqueuers(app: currant.App) -> None:
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: app.enqueue("noop"), range(200)))
    assert len(set(ids)) == 200


def test_processes_option_supervises_and_restarts(
    app: currant.App,
    spawn_worker: Any,
    db: psycopg.Connection[Any],
) -> None:
    import psutil

    app.enqueue_many("record", [(f"p{i}",) for i in range(2_000)])
    supervisor = spawn_worker("--processes", "2", "--batch-size", "100")
    wait_for(lambda: len(psutil.Process(supervisor.pid).children()) == 2, message="two children")
    victim = psutil.Process(supervisor.pid).children()[0]
    victim.kill()
    wait_for(
        lambda: len([c for c in psutil.Process(supervisor.pid).children() if c.pid != victim.pid]) == 2,
        timeout=15,
        message="a replacement child",
    )
    wait_for(lambda: len(ledger(db, app.schema)) >= 2_000, timeout=60, message="all jobs run")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0
    keys = Counter(key for key, _, _ in ledger(db, app.schema))
    assert len(keys) == 2_000


def test_processes_option_in_burst_mode(app: currant.App, spawn_worker: Any, db: psycopg.Connection[Any]) -> None:
    app.enqueue_many("noop", [()] * 5_000)
    assert spawn_worker("--processes", "2", "--burst").wait(60) == 0
    assert state_counts(db, app.schema) == {"succeeded": 5_000}


def test_error_text_with_nul_is_stored(app: currant.App, spawn_worker: Any) -> None:
    job_id = app.enqueue("nul_error")
    assert spawn_worker("--burst").wait(60) == 0
    job = app.get_job(job_id)
    assert job is not None and job.state == "failed"
    assert (job.error or "").startswith("ValueError: bad\\x00byte")


def test_odd_failures_never_wedge_the_worker(app: currant.App, spawn_worker: Any) -> None:
    """A backoff policy that raises, an absurd retry delay, an error text that
    cannot be encoded: each is recorded, and the jobs after them still run."""
    broken = app.enqueue("bad_backoff")
    far = app.enqueue("retry_forever_later", (1e20,))
    nan = app.enqueue("retry_forever_later", (float("nan"),), max_attempts=1)
    odd = app.enqueue("surrogate_error")
    after = app.enqueue_many("add", [(i, i) for i in range(50)])
    assert spawn_worker("--burst").wait(60) == 0
    job = app.get_job(broken)
    assert job is not None and job.state == "failed" and "OutcomeError" in (job.error or "")
    job = app.get_job(far)
    assert job is not None and job.state == "retrying" and job.run_at is not None
    assert (job.run_at - datetime.fromisoformat(job.errors[-1]["at"])).days >= 364  # clamped to a year
    job = app.get_job(nan)
    assert job is not None and job.state == "failed"
    job = app.get_job(odd)
    assert job is not None and job.state == "failed" and "\\udcff" in (job.error or "")
    assert [app.get_job(j).result for j in after] == [2 * i for i in range(50)]  # type: ignore[union-attr]


def test_periodic_arguments_are_checked_at_registration() -> None:
    app = currant.App("postgresql://unused", schema="unused")
    with pytest.raises(TypeError, match="argument 0"):
        app.periodic("* * * * *", name="bad", args=(object(),))(lambda x: None)


def test_worker_declared_dead_while_working_leaves_nothing_stuck(
    app: currant.App, spawn_worker: Any, db: psycopg.Connection[Any]
) -> None:
    """A sweep declares a live worker dead (as after a long stall): its jobs are
    rescued, it registers again, and no job stays leased to the dead id."""
    app.enqueue_many("record_slowly", [(f"s{i}", 0.005) for i in range(400)])
    worker = spawn_worker("--batch-size", "50", "--heartbeat", "0.3", "--dead-after", "30")
    victim = wait_for(lambda: db.execute(f'SELECT id FROM "{app.schema}".workers').fetchone(), message="registration")[
        0
    ]
    wait_for(lambda: len(ledger(db, app.schema)) > 20, message="work under way")
    sweeper = db.execute(
        f"INSERT INTO \"{app.schema}\".workers (hostname, pid, queues) VALUES ('sweeper', 0, '{{default}}') RETURNING id"
    ).fetchone()[0]
    db.execute(f"UPDATE \"{app.schema}\".workers SET last_seen = now() - interval '1 hour' WHERE id = %s", (victim,))
    row = db.execute(
        app.sql["maintain"],
        {
            "worker": sweeper,
            "queues": ["default"],
            "running": [],
            "dead_after": 1.0,
            "max_rescues": 3,
            "keep_succeeded": 86400.0,
            "keep_failed": 86400.0,
            "prune_batch": 1000,
            "channel": app.channel,
            "done_queues": [],
            "done_tasks": [],
            "done_outcomes": [],
            "done_counts": [],
        },
    ).fetchone()
    assert row is not None and row[2] >= 1  # rescued something
    db.execute(f'DELETE FROM "{app.schema}".workers WHERE id = %s', (sweeper,))
    wait_for(
        lambda: state_counts(db, app.schema) == {"succeeded": 400},
        timeout=60,
        message=f"all jobs done; now {state_counts(db, app.schema)}",
    )
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert "declared dead" in worker.log()
