"""Nothing a worker waits on may starve its heartbeat, and a supervisor killed
outright leaves no workers behind (``--processes``)."""

from __future__ import annotations

import signal
from typing import Any

import psutil

import currant
from tests.conftest import ledger, wait_for, wait_heartbeat_past


def test_children_of_a_killed_supervisor_finish_their_jobs_and_exit(
    app: currant.App, spawn_worker: Any, db: Any
) -> None:
    supervisor = spawn_worker("--processes", "2", "--poll-interval", "0.2")
    parent = psutil.Process(supervisor.pid)
    children = wait_for(
        lambda: (found := parent.children()) and len(found) == 2 and found,
        timeout=30,
        message="two child processes",
    )
    job_id = app.enqueue("announce_slowly", ("during", 1.0))
    wait_for(
        lambda: any(key == "during:started" for key, _pid, _ in ledger(db, app.schema)),
        message="the job's handler running in a child",
    )
    supervisor.signal(signal.SIGKILL)  # no SIGTERM reaches the children
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"orphaned workers still running: {[p.pid for p in alive]}\n{supervisor.log()[-3000:]}"
    job = app.get_job(job_id)
    assert job.state == "succeeded" and job.attempts == 1  # finished in the grace period, not cut off
    assert supervisor.log().count("the supervisor (pid") == 2


def test_a_progress_report_on_a_locked_row_does_not_hold_the_heartbeat(
    app: currant.App, spawn_worker: Any, db: Any, database_dsn: str
) -> None:
    """Progress reports share the claims connection with the heartbeat. A report
    for a row a user holds locked must not wait for it: the heartbeat queued
    behind it would stop, and past --dead-after the worker's jobs run again."""
    import psycopg

    worker = spawn_worker("--heartbeat", "0.2", "--dead-after", "2", "--db-timeout", "20")
    job_id = app.enqueue("progress_until_go", ("locked",))
    wait_for(lambda: (app.get_job(job_id).progress or {}).get("done", 0) >= 1, message="progress written")
    with psycopg.connect(database_dsn) as holder:
        holder.execute(f'SELECT 1 FROM "{app.schema}".jobs WHERE id = %s FOR UPDATE', (job_id,))
        (locked_at,) = db.execute("SELECT now()").fetchone()
        wait_heartbeat_past(db, app.schema, locked_at, 2.5)
        holder.rollback()
    db.execute(f'INSERT INTO "{app.schema}".ledger (key) VALUES (%s)', ("locked:go",))
    wait_for(lambda: app.get_job(job_id).state == "succeeded", message="the job completed")
    assert app.get_job(job_id).attempts == 1
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
