"""Many worker processes on one PostgreSQL (issue 17, parts 1 and 3).

* The connection budget: a worker process holds two connections (claims with
  the heartbeat; completions); a supervisor of ``--processes N`` holds the
  host's one LISTEN. So a host holds ``2 N + 1``, a lone worker 3.
* The thundering herd: one NOTIFY wakes one child, not all of them, so at low
  load one job costs about one claim however many processes idle.
* A full claim passes the wake-up on: a burst still spreads over the children.

Sessions are counted in ``pg_stat_activity`` by the workers' application_name
in this run's own database.
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import currant
from currant.codec import encode_payload
from tests.conftest import state_counts, wait_for, wait_heartbeat_past, wait_listening

# No fallback poll and no heartbeat-poll inside a test's few seconds: every
# claim counted is one a wake-up caused.
QUIET = ("--poll-interval", "30", "--heartbeat", "10", "--dead-after", "60")


def _sessions(db: Any) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'currant-worker'"
    ).fetchone()
    return int(row[0])


def _registered(db: Any, schema: str) -> int:
    return int(db.execute(f'SELECT count(*) FROM "{schema}".workers').fetchone()[0])


def _claims(log: str) -> tuple[int, int]:
    """(claims, empty claims) summed over the exit lines of every process in the log."""
    found = re.findall(r"jobs/s, (\d+) claims, (\d+) empty\)", log)
    return sum(int(claims) for claims, _ in found), sum(int(empty) for _, empty in found)


def test_connection_budget_two_per_process_plus_one_listen(app: currant.App, spawn_worker: Any, db: Any) -> None:
    processes = 4
    worker = spawn_worker("--processes", str(processes), "--heartbeat", "0.3", "--dead-after", "10")
    wait_for(lambda: _registered(db, app.schema) == processes, message="every process registered")
    wait_listening(db, app.channel)
    budget = 2 * processes + 1
    wait_for(lambda: _sessions(db) == budget, timeout=15, message=f"{budget} sessions")
    # Several heartbeats later (the heartbeat rides the completions
    # connection), still no more than the budget.
    (start,) = db.execute("SELECT now()").fetchone()
    seen = []

    def beaten_twice() -> bool:
        seen.append(_sessions(db))
        (beats,) = db.execute(
            f"SELECT count(*) FROM \"{app.schema}\".workers WHERE last_seen > %s + interval '0.7 seconds'", (start,)
        ).fetchone()
        return bool(beats == processes)

    wait_for(beaten_twice, timeout=15, message="two heartbeats of every process")
    assert max(seen) == budget, seen
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_a_lone_worker_holds_three(app: currant.App, spawn_worker: Any, db: Any) -> None:
    worker = spawn_worker("--heartbeat", "0.3", "--dead-after", "10")
    wait_listening(db, app.channel)
    wait_for(lambda: _sessions(db) == 3, timeout=15, message="3 sessions")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_one_notify_wakes_one_of_eight_idle_processes(app: currant.App, spawn_worker: Any, db: Any) -> None:
    processes, jobs = 8, 16
    worker = spawn_worker("--processes", str(processes), *QUIET)
    wait_for(lambda: _registered(db, app.schema) == processes, message="every process registered")
    wait_listening(db, app.channel)
    wait_for(lambda: _sessions(db) == 2 * processes + 1, timeout=15, message="every process connected")
    for n in range(jobs):  # low load: one job at a time
        job_id = app.enqueue("add", (n, 1))
        wait_for(lambda: app.get_job(job_id).state == "succeeded", timeout=10, message=f"job {n} done")  # type: ignore[union-attr]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    claims, empty = _claims(worker.log())
    print(f"\n{processes} idle processes, {jobs} jobs one at a time: {claims} claims, {empty} empty")
    assert claims - empty == jobs
    # Each process claims once at start and once when LISTEN comes up; past
    # those, a job costs one claim (every process woken: 8 per job).
    assert empty <= 2 * processes + jobs // 4, (claims, empty)


def test_a_full_claim_passes_the_wake_up_on(app: currant.App, spawn_worker: Any, db: Any) -> None:
    """One NOTIFY for 2,000 jobs wakes one child; its full batch wakes the next,
    and so on: every child works, long before any poll or heartbeat."""
    processes = 4
    worker = spawn_worker("--processes", str(processes), "--batch-size", "50", *QUIET)
    wait_for(lambda: _registered(db, app.schema) == processes, message="every process registered")
    wait_listening(db, app.channel)
    app.enqueue_many("noop", [()] * 2000)
    wait_for(
        lambda: state_counts(db, app.schema) == {"succeeded": 2000}, timeout=9, message="drained before a heartbeat"
    )
    (workers,) = db.execute(f'SELECT count(DISTINCT worker_id) FROM "{app.schema}".jobs').fetchone()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert workers == processes


def test_maintain_brings_its_own_planner_settings(app: currant.App, db: Any) -> None:
    """maintain() now runs on the claims connection, under the claim
    path's planner guards; under them it took 175 ms instead of 1 ms
    (BENCHMARKS.md). Its function-level settings (0008) put the planner back."""
    (config,) = db.execute(
        "SELECT proconfig FROM pg_proc WHERE proname = 'maintain' AND pronamespace = %s::regnamespace",
        (app.schema,),
    ).fetchone()
    for setting in ("enable_nestloop=on", "enable_seqscan=on", "enable_bitmapscan=on", "plan_cache_mode=auto"):
        assert setting in config, config


def test_the_heartbeat_does_not_wait_behind_a_blocked_completion(
    app: currant.App, spawn_worker: Any, db: Any, database_dsn: str
) -> None:
    """The heartbeat shares a connection now. A completion waits on a lock
    held on its row (a user's transaction here); the heartbeat must go on
    meanwhile, past --dead-after, or another worker would declare this one
    dead and run its jobs again."""
    import psycopg

    worker = spawn_worker("--heartbeat", "0.2", "--dead-after", "2", "--db-timeout", "20")
    job_id = app.enqueue("record_slowly", ("blocked", 0.5))
    wait_for(lambda: app.get_job(job_id).state == "running", message="the job running")  # type: ignore[union-attr]
    with psycopg.connect(database_dsn) as holder:
        holder.execute(f'SELECT 1 FROM "{app.schema}".jobs WHERE id = %s FOR UPDATE', (job_id,))
        (locked_at,) = db.execute("SELECT now()").fetchone()
        # The job finishes and its completion waits for our lock; the
        # heartbeat must still be seen, more than --dead-after later.
        wait_heartbeat_past(db, app.schema, locked_at, 2.5)
        assert app.get_job(job_id).state == "running"  # type: ignore[union-attr]
        holder.rollback()
    wait_for(lambda: app.get_job(job_id).state == "succeeded", message="the job completed")  # type: ignore[union-attr]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_a_wake_up_goes_to_a_process_with_a_free_lane(app: currant.App, spawn_worker: Any, db: Any) -> None:
    """Two processes of one lane each. One runs a long job; the notifications
    that follow go to the other, in turn or not: a job woken into the busy
    process's prefetch queue would wait for the long job (or the next poll)."""
    worker = spawn_worker("--processes", "2", "--concurrency", "1", *QUIET)
    wait_for(lambda: _registered(db, app.schema) == 2, message="both processes registered")
    wait_listening(db, app.channel)
    long_job = app.enqueue("record_slowly", ("long", 4.0))
    wait_for(lambda: app.get_job(long_job).state == "running", message="the long job running")  # type: ignore[union-attr]
    for n in range(3):
        started = time.monotonic()
        job_id = app.enqueue("add", (n, 1))
        wait_for(lambda: app.get_job(job_id).state == "succeeded", timeout=10, message=f"quick job {n}")  # type: ignore[union-attr]
        assert time.monotonic() - started < 2, f"quick job {n} waited behind the long one"
    assert app.get_job(long_job).state == "running"  # type: ignore[union-attr]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_the_supervisor_polls_for_its_host(app: currant.App, spawn_worker: Any, db: Any) -> None:
    """Jobs that no notification announces (committed without NOTIFY, as if it
    had been lost) are found by the host's one poll, every --poll-interval,
    not by a poll of every process: an idle host of 8 processes sends one
    statement per interval (has_ready), not 8 empty claims."""
    processes, jobs = 8, 5
    worker = spawn_worker(
        "--processes", str(processes), "--poll-interval", "0.2", "--heartbeat", "10", "--dead-after", "60"
    )
    wait_for(lambda: _registered(db, app.schema) == processes, message="every process registered")
    wait_listening(db, app.channel)
    wait_for(lambda: _sessions(db) == 2 * processes + 1, timeout=15, message="every process connected")
    payload = encode_payload((1, 2), {})
    for n in range(jobs):
        (job_id,) = db.execute(
            f"INSERT INTO \"{app.schema}\".jobs (queue, task, payload) VALUES ('default', 'add', %s) RETURNING id",
            (payload,),
        ).fetchone()
        # Found by a poll: within a few intervals, where the heartbeat (10 s) would take far longer.
        wait_for(lambda: app.get_job(job_id).state == "succeeded", timeout=5, message=f"silent job {n} found")  # type: ignore[union-attr]
    # An idle second and a half, ended by a job coming due (its notification
    # wakes one process, which promotes it): no process polls meanwhile.
    later = app.enqueue("add", (3, 4), delay=1.5)
    wait_for(lambda: app.get_job(later).state == "succeeded", timeout=10, message="the delayed job done")  # type: ignore[union-attr]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    claims, empty = _claims(worker.log())
    print(f"\n{processes} idle processes, {jobs} silent jobs: {claims} claims, {empty} empty")
    assert claims - empty == jobs + 1
    # Each process claims once at start and once when LISTEN comes up, and a
    # few wake-ups find nothing left. With every process polling on its own,
    # the idle 1.5 s alone would add about 8 × 7 empty claims.
    assert empty <= 2 * processes + jobs + 4, (claims, empty)
