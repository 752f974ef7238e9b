"""A job's life: retries, scheduling, priorities, leases and rescue, timeouts,
uniqueness, cancellation, cron, retention. Real PostgreSQL, real worker processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

import currant
from currant.worker.arrays import register_array_dumpers
from currant.worker.completer import completion_params
from tests.conftest import ROOT, ledger, state_counts, wait_for, wait_listening

# Every field of currant.Job, in order (what `python -m currant show --json` prints).
JOB_FIELDS = (
    "id",
    "task",
    "queue",
    "state",
    "attempts",
    "max_attempts",
    "priority",
    "result",
    "error",
    "errors",
    "enqueued_at",
    "started_at",
    "finished_at",
    "run_at",
    "cancel_requested",
    "unique_key",
    "rescues",
    "args",
    "kwargs",
    "payload_error",
    "worker_id",
    "progress",
)

# Short lease timings for the tests (production defaults: 5 s / 30 s).
FAST_LEASES = ("--heartbeat", "0.2", "--dead-after", "1.0")


def _job(app: currant.App, job_id: int) -> currant.Job:
    job = app.get_job(job_id)
    assert job is not None
    return job


def _seconds(a: str | datetime, b: str | datetime) -> float:
    parse = lambda v: v if isinstance(v, datetime) else datetime.fromisoformat(v)
    return (parse(a) - parse(b)).total_seconds()


# -- retries -----------------------------------------------------------------


def test_retries_back_off_on_the_database_clock_then_fail(app: currant.App, spawn_worker: Any, db: Any) -> None:
    job_id = app.enqueue("fail", ("nope",))  # max_attempts=3, retry_backoff=0.2
    for attempt, base in ((1, 0.2), (2, 0.4)):
        assert spawn_worker("--burst").wait() == 0
        job = _job(app, job_id)
        # A burst worker slower to exit than the backoff (a loaded machine) may
        # promote the job as it stops: queued again, its run_at unchanged.
        assert job.state in ("retrying", "queued") and job.attempts == attempt, job
        delay = _seconds(job.run_at, job.errors[-1]["at"])  # type: ignore[arg-type]
        assert base * 0.74 <= delay <= base * 1.26, delay
        # On the database clock, which the worker's claim reads too.
        wait_for(
            lambda: db.execute(
                f'SELECT run_at <= "{app.schema}".clock() FROM "{app.schema}".jobs WHERE id = %s', (job_id,)
            ).fetchone()[0],
            message="backoff over",
        )
    assert spawn_worker("--burst").wait() == 0
    job = _job(app, job_id)
    assert (job.state, job.attempts) == ("failed", 3)
    assert [e["attempt"] for e in job.errors] == [1, 2, 3]
    assert all(e["error"] == "ValueError: nope" and "Traceback" in e["traceback"] for e in job.errors)
    assert job.finished_at is not None


def test_retry_and_discard_raised_by_the_task(app: currant.App, spawn_worker: Any) -> None:
    again = app.enqueue("ask_retry", (0.5,))
    dropped = app.enqueue("discard", ("bad input",))
    assert spawn_worker("--burst").wait() == 0
    job = _job(app, again)
    assert (job.state, job.attempts) == ("retrying", 1)
    assert abs(_seconds(job.run_at, job.errors[-1]["at"]) - 0.5) < 0.01  # type: ignore[arg-type]
    assert job.errors[-1]["error"] == "Retry: retry requested"
    job = _job(app, dropped)
    assert (job.state, job.attempts, job.error) == ("failed", 1, "Discard: bad input")


def test_running_worker_picks_up_its_retries_on_time(app: currant.App, spawn_worker: Any, db: Any) -> None:
    job_id = app.enqueue("fail_once", ("k",))  # backoff 0.05 s
    worker = spawn_worker("--poll-interval", "30", "--heartbeat", "30", "--dead-after", "90")
    wait_for(lambda: _job(app, job_id).state == "succeeded", timeout=10, message="second attempt")
    job = _job(app, job_id)
    assert job.attempts == 2 and job.result == "ok"
    # It did not wait for a poll or a heartbeat: the retry ran right after its backoff.
    assert _seconds(job.started_at, job.errors[0]["at"]) < 1.0  # type: ignore[arg-type]
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_app_retry_requeues_a_failed_job(app: currant.App, spawn_worker: Any) -> None:
    job_id = app.enqueue("discard", ("x",))
    assert spawn_worker("--burst").wait() == 0
    assert _job(app, job_id).state == "failed"
    assert app.retry(job_id) is True
    assert app.retry(job_id) is False  # queued now, not failed
    assert _job(app, job_id).state == "queued"
    assert spawn_worker("--burst").wait() == 0
    job = _job(app, job_id)
    assert (job.state, job.attempts, len(job.errors)) == ("failed", 2, 2)


# -- scheduling and priorities -----------------------------------------------


def test_scheduled_job_not_early_and_on_time(app: currant.App, spawn_worker: Any, db: Any) -> None:
    worker = spawn_worker("--poll-interval", "30", "--heartbeat", "30", "--dead-after", "90")
    # Poll and heartbeat are 30 s away: only the job's d: notification can
    # wake the worker in time, so it must be listening before the enqueue.
    wait_listening(db, app.channel)
    job_id = app.enqueue("record", ("later",), delay=2.0)
    assert _job(app, job_id).state == "scheduled"
    wait_for(lambda: _job(app, job_id).state == "succeeded", timeout=10, message="scheduled job ran")
    job = _job(app, job_id)
    # Not early: claimed (started_at, database clock) no sooner than run_at.
    assert job.started_at >= job.run_at  # type: ignore[operator]
    assert _seconds(job.started_at, job.run_at) < 0.5  # type: ignore[arg-type]
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_run_at_in_the_past_is_ready_and_naive_datetimes_are_refused(app: currant.App) -> None:
    job_id = app.enqueue("noop", run_at=datetime.now(timezone.utc) - timedelta(hours=1))
    assert _job(app, job_id).state == "queued"
    with pytest.raises(ValueError, match="timezone-aware"):
        app.enqueue("noop", run_at=datetime.now())
    with pytest.raises(ValueError, match="run_at or delay"):
        app.enqueue("noop", run_at=datetime.now(timezone.utc), delay=1)
    with pytest.raises(ValueError, match="non-negative"):
        app.enqueue("noop", delay=-1)


def test_enqueue_many_with_delays(app: currant.App, spawn_worker: Any) -> None:
    ids = app.enqueue_many(
        "noop", [currant.Item(delay=60), (), currant.Item(run_at=datetime.now(timezone.utc) + timedelta(hours=1))]
    )
    assert [_job(app, i).state for i in ids] == ["scheduled", "queued", "scheduled"]
    assert spawn_worker("--burst").wait() == 0
    assert [_job(app, i).state for i in ids] == ["scheduled", "succeeded", "scheduled"]


def test_priority_first_then_fifo(app: currant.App, spawn_worker: Any, db: Any) -> None:
    app.enqueue("record", ("negative",), priority=-1)
    for i in range(5):
        app.enqueue("record", (f"low{i}",))
    for i in range(5):
        app.enqueue("record", (f"high{i}",), priority=10)
    app.enqueue("record", ("mid",), priority=5)
    app.enqueue_many("record", [("bulk-mid",), currant.Item(args=("bulk-negative",), priority=-5)], priority=5)
    assert spawn_worker("--burst", "--concurrency", "1").wait() == 0
    order = [key for key, _, _ in ledger(db, app.schema)]
    assert order == (
        [f"high{i}" for i in range(5)]
        + ["mid", "bulk-mid"]
        + [f"low{i}" for i in range(5)]
        + ["negative", "bulk-negative"]
    )


def test_queues_are_claimed_in_the_given_order(app: currant.App, spawn_worker: Any, db: Any) -> None:
    app.enqueue_many("record", [(f"a{i}",) for i in range(3)], queue="a")
    app.enqueue_many("record", [(f"b{i}",) for i in range(3)], queue="b")
    app.enqueue("record", ("c0",), queue="c")
    assert spawn_worker("--burst", "--concurrency", "1", "--queues", "b,a").wait() == 0
    assert [key for key, _, _ in ledger(db, app.schema)] == ["b0", "b1", "b2", "a0", "a1", "a2"]
    assert app.stats()["queues"]["c"]["states"]["queued"] == 1


# -- leases, rescue, poison, fencing -------------------------------------------


def test_killed_worker_jobs_are_rescued_in_bounded_time(app: currant.App, spawn_worker: Any, db: Any) -> None:
    job_id = app.enqueue("record_slowly", ("slow", 1.5))
    victim = spawn_worker(*FAST_LEASES)
    wait_for(lambda: _job(app, job_id).state == "running", message="job running")
    victim.kill()  # SIGKILL mid-handler
    killed_at = time.monotonic()
    rescuer = spawn_worker(*FAST_LEASES)
    wait_for(lambda: _job(app, job_id).rescues == 1, timeout=10, message="rescue")
    # heartbeat + dead_after + one sweep period, plus process start-up slack.
    assert time.monotonic() - killed_at < 0.2 + 1.0 + 0.2 + 2.0
    wait_for(lambda: _job(app, job_id).state == "succeeded", timeout=15, message="rerun")
    job = _job(app, job_id)
    assert job.attempts == 2
    assert job.errors[0]["error"].startswith("WorkerLost: worker")
    entries = ledger(db, app.schema)
    assert [(key, pid) for key, pid, _ in entries] == [("slow", rescuer.pid)]
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait() == 0


def test_poison_job_fails_after_repeated_kills_and_spares_batch_mates(
    app: currant.App, spawn_worker: Any, db: Any
) -> None:
    poison = app.enqueue("kill_worker", ("poison",))
    mates = app.enqueue_many("record", [(f"mate{i}",) for i in range(20)])
    deaths = 0
    survivor = None
    deadline = time.monotonic() + 60
    while _job(app, poison).state != "failed":
        assert time.monotonic() < deadline, f"poison job never failed: {_job(app, poison)}"
        worker = spawn_worker(*FAST_LEASES, "--max-rescues", "3")
        wait_for(
            lambda: worker.popen.poll() is not None or _job(app, poison).state == "failed",
            timeout=30,
            interval=0.05,
            message="the worker died, or the poison job failed",
        )
        if worker.popen.poll() is not None:
            assert worker.popen.returncode == -signal.SIGKILL
            deaths += 1
        else:
            survivor = worker
    job = _job(app, poison)
    assert deaths == 3 and job.rescues == 3
    assert "treated as poison" in job.errors[-1]["error"]
    assert [key for key, _, _ in ledger(db, app.schema)].count("poison") == 3
    # Batch-mates caught in the first crash were re-run alone and succeed.
    assert survivor is not None
    wait_for(lambda: all(_job(app, m).state == "succeeded" for m in mates), timeout=20, message="mates done")
    assert max(_job(app, m).rescues for m in mates) <= 1
    counts = Counter(key for key, _, _ in ledger(db, app.schema))
    assert all(counts[f"mate{i}"] >= 1 for i in range(20))
    survivor.signal(signal.SIGTERM)
    assert survivor.wait() == 0


def test_stale_completion_is_fenced(app: currant.App, database_dsn: str) -> None:
    job_id = app.enqueue("noop")
    sql = app.sql
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        register_array_dumpers(conn)
        registration = {"hostname": "h", "pid": 1, "queues": ["default"], "concurrency": 1}
        register = lambda: conn.execute(sql["register_worker"], registration).fetchone()[0]
        old_owner, new_owner = register(), register()
        claimed = conn.execute(sql["claim"], {"queue": "default", "limit": 10, "worker": old_owner}).fetchall()
        assert [(row[0], row[1]) for row in claimed] == [(job_id, 1)]
        # The lease passes to another worker (as a rescue would) and it claims attempt 2.
        conn.execute(f"UPDATE \"{app.schema}\".jobs SET state = 'queued', worker_id = NULL WHERE id = %s", (job_id,))
        assert conn.execute(sql["claim"], {"queue": "default", "limit": 10, "worker": new_owner}).fetchall()[0][1] == 2
        # The zombie's success, failure and release all change nothing.
        (fast,), _ = completion_params([(job_id, 1, None)], old_owner)
        assert conn.execute(sql["complete_succeeded"], fast).fetchall() == [(0, [])]
        from currant.worker.outcomes import FAILED, Outcome

        _, general = completion_params([(job_id, 1, Outcome(FAILED, error="zombie"))], old_owner)
        assert conn.execute(sql["complete_outcomes"], general).rowcount == 0
        # Even with the right attempt, the wrong owner is fenced out.
        (fast,), _ = completion_params([(job_id, 2, None)], old_owner)
        assert conn.execute(sql["complete_succeeded"], fast).fetchall() == [(0, [])]
        job = _job(app, job_id)
        assert (job.state, job.attempts, job.errors) == ("running", 2, [])
        # The rightful owner completes; in a batch with a fenced job, it is told which one was recorded.
        (fast,), _ = completion_params([(job_id + 1000, 2, None), (job_id, 2, None)], new_owner)
        assert conn.execute(sql["complete_succeeded"], fast).fetchall() == [(1, [job_id])]
    assert _job(app, job_id).state == "succeeded"


# -- timeouts -------------------------------------------------------------------


@pytest.mark.parametrize(("task", "queue"), [("hang", "default"), ("async_hang", "async")])
def test_timeouts_fail_the_attempt_and_follow_the_retry_policy(
    app: currant.App, spawn_worker: Any, task: str, queue: str
) -> None:
    job_id = app.enqueue(task, ("t",), queue=queue)
    worker = spawn_worker("--queues", queue, "--concurrency", "1")
    wait_for(lambda: _job(app, job_id).state == "failed", timeout=15, message="both attempts timed out")
    job = _job(app, job_id)
    assert job.attempts == 2
    assert [e["error"] for e in job.errors] == ["JobTimeout: timed out after 0.5 s"] * 2
    # The worker carries on with a fresh lane.
    after = app.enqueue("add", (1, 1), queue=queue)
    wait_for(lambda: _job(app, after).state == "succeeded", timeout=10, message="worker still serving")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    if task == "hang":
        assert "abandoned" in worker.log()


# -- uniqueness ------------------------------------------------------------------


def test_unique_key_under_8_concurrent_enqueuers(app: currant.App, db: Any) -> None:
    def enqueue(i: int) -> int:
        return app.enqueue("noop", unique_key=f"key-{i % 3}")

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(enqueue, range(240)))
    by_key: dict[int, set[int]] = {}
    for i, job_id in enumerate(ids):
        by_key.setdefault(i % 3, set()).add(job_id)
    assert all(len(found) == 1 for found in by_key.values()), by_key
    assert state_counts(db, app.schema) == {"queued": 3}


def test_unique_key_in_enqueue_many_and_release_after_finish(app: currant.App, spawn_worker: Any, db: Any) -> None:
    existing = app.enqueue("noop", unique_key="a")
    ids = app.enqueue_many(
        "noop",
        [
            currant.Item(unique_key="a"),
            currant.Item(unique_key="b"),
            currant.Item(unique_key="b"),
            (),
            currant.Item(unique_key="c"),
        ],
    )
    assert ids[0] == existing
    assert ids[1] == ids[2] != existing
    assert len(set(ids)) == 4
    assert state_counts(db, app.schema) == {"queued": 4}
    assert spawn_worker("--burst").wait() == 0
    # Finished jobs release their key.
    again = app.enqueue("noop", unique_key="a")
    assert again not in ids


def test_concurrent_enqueue_many_with_overlapping_keys(app: currant.App, db: Any) -> None:
    def batch(n: int) -> list[int]:
        return app.enqueue_many("noop", [currant.Item(unique_key=f"k{(n + i) % 10}") for i in range(10)])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(batch, range(8)))
    rows = db.execute(f'SELECT unique_key, id FROM "{app.schema}".jobs').fetchall()
    assert len(rows) == 10 and len({key for key, _ in rows}) == 10
    owner = dict(rows)
    for n, ids in enumerate(results):
        assert ids == [owner[f"k{(n + i) % 10}"] for i in range(10)]


def test_bulk_enqueues_taking_keys_in_different_orders_never_deadlock(app: currant.App, db: Any) -> None:
    # Each batch meets the same ten keys in a different order. Inserted by id,
    # two batches would wait on each other's uncommitted keys (PostgreSQL
    # broke about one round in five with DeadlockDetected); inserted in key
    # order, one simply waits for the other.
    def batch(n: int) -> list[int]:
        return app.enqueue_many("noop", [currant.Item(unique_key=f"k{(n * 3 + i) % 10}") for i in range(10)])

    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            results = list(pool.map(batch, range(8)))
            owner = dict(db.execute(f'SELECT unique_key, id FROM "{app.schema}".jobs').fetchall())
            assert len(owner) == 10
            for n, ids in enumerate(results):
                assert ids == [owner[f"k{(n * 3 + i) % 10}"] for i in range(10)]
            db.execute(f'DELETE FROM "{app.schema}".jobs')


# -- cancellation -------------------------------------------------------------------


def test_cancel_before_run(app: currant.App, spawn_worker: Any, db: Any) -> None:
    job_id = app.enqueue("record", ("never",))
    later = app.enqueue("record", ("never-later",), delay=60)
    assert app.cancel(job_id) == "cancelled"
    assert app.cancel(later) == "cancelled"
    assert app.cancel(job_id) == "already_cancelled"
    assert app.cancel(10**12) == "not_found"
    assert spawn_worker("--burst").wait() == 0
    assert ledger(db, app.schema) == []
    assert _job(app, job_id).state == "cancelled" and _job(app, job_id).cancel_requested


def test_cancel_finished_job_is_a_no_op(app: currant.App, spawn_worker: Any) -> None:
    job_id = app.enqueue("add", (1, 2))
    assert spawn_worker("--burst").wait() == 0
    assert app.cancel(job_id) == "already_succeeded"
    job = _job(app, job_id)
    assert (job.state, job.result, job.cancel_requested) == ("succeeded", 3, False)


def test_cancel_running_sync_job_sets_its_flag(app: currant.App, spawn_worker: Any, db: Any) -> None:
    job_id = app.enqueue("cooperative", ("c",))
    worker = spawn_worker()
    wait_for(lambda: ("c:started",) in [(k,) for k, _, _ in ledger(db, app.schema)], message="job started")
    assert app.cancel(job_id) == "cancel_requested"
    wait_for(lambda: _job(app, job_id).state == "cancelled", timeout=10, message="cancelled")
    assert "c:saw-cancel" in [k for k, _, _ in ledger(db, app.schema)]
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_cancel_running_async_job_cancels_it(app: currant.App, spawn_worker: Any, db: Any) -> None:
    job_id = app.enqueue("async_wait", ("w",), queue="async")
    worker = spawn_worker("--queues", "async")
    wait_for(lambda: ledger(db, app.schema), message="job started")
    assert app.cancel(job_id) == "cancel_requested"
    wait_for(lambda: _job(app, job_id).state == "cancelled", timeout=10, message="cancelled")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


# -- cron ----------------------------------------------------------------------------


_TICK_LINE = re.compile(r"periodic tick: enqueued job (\d+) for tick (\S+)")


def _ticks_enqueued(*workers: Any) -> dict[int, datetime]:
    """Job id -> the cron tick it was enqueued for, as the workers logged it."""
    return {
        int(job_id): datetime.fromisoformat(tick)
        for worker in workers
        for job_id, tick in _TICK_LINE.findall(worker.log())
    }


def _whole_periods(gap: timedelta, period: timedelta) -> bool:
    """Two distinct ticks of the schedule: a gap of one period or more (a
    worker stalled past a whole period fires only the latest tick)."""
    return gap >= period and gap % period == timedelta(0)


def test_cron_ticks_exactly_once_with_3_workers(app: currant.App, spawn_worker: Any, db: Any) -> None:
    env = {"CURRANT_TEST_CRON": "* * * * * */2"}  # every 2 seconds (croniter's seconds field)
    period = timedelta(seconds=2)
    workers = [spawn_worker(env=env) for _ in range(3)]
    wait_for(lambda: len(_ticks_enqueued(*workers)) >= 3, timeout=20, message="three ticks enqueued")
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait() == 0, worker.log()
    jobs = dict(db.execute(f"SELECT id, state::text FROM \"{app.schema}\".jobs WHERE task = 'tick'").fetchall())
    assert 3 <= len(jobs) <= 5, jobs
    # Judged by the tick each job stands for, not by when it was enqueued:
    # a loaded machine may fire one tick late and the next on time.
    tick_of = _ticks_enqueued(*workers)
    assert set(tick_of) == set(jobs), (tick_of, jobs)
    ticks = sorted(tick_of.values())
    assert all(_whole_periods(b - a, period) for a, b in zip(ticks, ticks[1:], strict=False)), ticks  # one job per tick
    runs = [key for key, _, _ in ledger(db, app.schema)].count("tick")
    assert runs == sum(1 for state in jobs.values() if state == "succeeded")

    # Ticks missed while no worker ran collapse into one at the next start. The
    # late worker's sessions read the database clock 20 s ahead (ten ticks
    # missed) instead of the test waiting for them to go by.
    db.execute(f'SELECT "{app.schema}".use_test_clock(true)')  # clock() honours the offset only then
    late = spawn_worker(env={**env, "PGOPTIONS": "-c currant.clock_offset=20s"})
    wait_for(lambda: len(_ticks_enqueued(late)) >= 2, timeout=10, message="the catch-up tick and one more")
    late.signal(signal.SIGTERM)
    assert late.wait() == 0
    late_ticks = sorted(_ticks_enqueued(late).items(), key=lambda item: item[1])
    first_job, catch_up = late_ticks[0]
    (first_enqueued_at,) = db.execute(
        f'SELECT enqueued_at FROM "{app.schema}".jobs WHERE id = %s', (first_job,)
    ).fetchone()
    # At least two ticks went by with no worker; only the latest of them is
    # enqueued. Every later tick is one the late worker saw come due.
    assert catch_up - ticks[-1] >= 2 * period, (ticks[-1], late_ticks)
    assert [tick for _, tick in late_ticks if tick <= first_enqueued_at] == [catch_up], (first_enqueued_at, late_ticks)
    assert all(_whole_periods(b[1] - a[1], period) for a, b in zip(late_ticks, late_ticks[1:], strict=False)), (
        late_ticks
    )


def test_invalid_cron_expression_is_refused() -> None:
    app = currant.App("postgresql://unused", schema="unused")
    with pytest.raises(ValueError, match="invalid cron expression"):
        app.periodic("every tuesday")(lambda: None)


# -- retention -----------------------------------------------------------------------


def test_workers_prune_finished_jobs_past_retention(app: currant.App, spawn_worker: Any, db: Any) -> None:
    ok = app.enqueue_many("noop", [()] * 30)
    bad = app.enqueue_many("discard", [("x",)] * 10)
    waiting = app.enqueue("noop", delay=3600)
    assert spawn_worker("--burst").wait() == 0
    schema = app.schema
    db.execute(
        f"UPDATE \"{schema}\".jobs SET finished_at = now() - interval '2 days' WHERE id = ANY(%s)", (ok[:20] + bad[:5],)
    )
    db.execute(f"UPDATE \"{schema}\".jobs SET finished_at = now() - interval '8 days' WHERE id = ANY(%s)", (bad[5:],))
    worker = spawn_worker(*FAST_LEASES)
    wait_for(
        lambda: db.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()[0] == 16, timeout=10, message="pruning"
    )
    left = {row[0] for row in db.execute(f'SELECT id FROM "{schema}".jobs')}
    assert left == set(ok[20:]) | set(bad[:5]) | {waiting}
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


# -- inspection and the admin CLI --------------------------------------------------------


def test_stats(app: currant.App, spawn_worker: Any) -> None:
    app.enqueue_many("noop", [()] * 3)
    app.enqueue("discard", ("x",))
    app.enqueue("noop", queue="other", delay=60)
    assert spawn_worker("--burst").wait() == 0
    app.enqueue("noop")
    stats = app.stats()
    assert stats["queues"]["default"]["states"]["succeeded"] == 3
    assert stats["queues"]["default"]["states"]["failed"] == 1
    assert stats["queues"]["default"]["states"]["queued"] == 1
    assert stats["queues"]["default"]["oldest_queued_age"] >= 0
    assert stats["queues"]["other"]["states"]["scheduled"] == 1
    assert stats["totals"]["succeeded"] == 3


def _admin(database_dsn: str, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "currant", "--dsn", database_dsn, "--schema", schema, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_admin_cli(app: currant.App, spawn_worker: Any, database_dsn: str, schema_name: str) -> None:
    fresh = schema_name + "_admin"
    proc = _admin(database_dsn, fresh, "migrate")
    assert proc.returncode == 0 and "applied" in proc.stdout
    assert json.loads(_admin(database_dsn, fresh, "--json", "migrate").stdout) == {"applied": []}

    failed = app.enqueue("discard", ("broken",))
    queued = app.enqueue("noop", delay=60)
    assert spawn_worker("--burst").wait() == 0
    stats = json.loads(_admin(database_dsn, schema_name, "--json", "stats").stdout)
    assert stats["totals"]["failed"] == 1 and stats["totals"]["scheduled"] == 1
    table = _admin(database_dsn, schema_name, "stats").stdout
    assert "queue" in table.splitlines()[0] and "default" in table

    listed = json.loads(_admin(database_dsn, schema_name, "--json", "failed").stdout)
    assert [(j["id"], j["last_error"]) for j in listed] == [(failed, "Discard: broken")]
    assert "Discard: broken" in _admin(database_dsn, schema_name, "failed").stdout

    # show: every field of the job, as app.get_job reads it.
    job = _job(app, failed)
    expected = {name: getattr(job, name) for name in JOB_FIELDS}
    expected.update(
        {name: expected[name].isoformat() for name in ("enqueued_at", "started_at", "finished_at", "run_at")}
    )
    expected["args"] = list(expected["args"])  # JSON has no tuples
    proc = _admin(database_dsn, schema_name, "--json", "show", str(failed))
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown == expected
    assert (shown["state"], shown["attempts"], shown["error"]) == ("failed", 1, "Discard: broken")
    assert [e["error"] for e in shown["errors"]] == ["Discard: broken"]
    proc = _admin(database_dsn, schema_name, "show", str(failed))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"job {failed}: discard on queue default, failed", lines
    fields = {name: rest.strip() for name, _, rest in (line.strip().partition(" ") for line in lines[1:])}
    assert fields["args"] == '["broken"]' and fields["kwargs"] == "{}", fields
    assert fields["finished_at"] == f"{job.finished_at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"  # type: ignore[union-attr]
    assert any(
        line.strip().startswith("attempt 1 failed at ") and line.endswith(": Discard: broken") for line in lines
    ), lines

    assert json.loads(_admin(database_dsn, schema_name, "--json", "retry", str(failed)).stdout) == [
        {"id": failed, "outcome": "retried"}
    ]
    assert _job(app, failed).state == "queued"
    assert json.loads(_admin(database_dsn, schema_name, "--json", "cancel", str(queued), str(failed)).stdout) == [
        {"id": queued, "outcome": "cancelled"},
        {"id": failed, "outcome": "cancelled"},
    ]
    assert json.loads(_admin(database_dsn, schema_name, "--json", "purge", "cancelled").stdout) == {"deleted": 2}
    assert app.get_job(queued) is None

    gone = _admin(database_dsn, schema_name, "show", str(failed))  # purged with the cancelled ones
    assert gone.returncode == 1 and f"job {failed} not found" in gone.stderr and gone.stdout == ""
    missing = _admin(database_dsn, schema_name, "show", "999999")
    assert missing.returncode == 1 and "not found" in missing.stderr
    bad = _admin(database_dsn, schema_name, "purge", "everything")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr
