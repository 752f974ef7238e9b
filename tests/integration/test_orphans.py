"""A supervisor killed outright leaves no workers behind (``--processes``)."""

from __future__ import annotations

import signal
from typing import Any

import psutil

import currant
from tests.conftest import ledger, wait_for


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
