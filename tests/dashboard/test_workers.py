"""Recently dead workers: a worker killed mid-job is declared dead by another,
and the dashboard shows who it was and what was taken back from it (0004)."""

from __future__ import annotations

import re
import signal
from typing import Any

import psycopg

import currant
from tests.conftest import wait_for
from tests.dashboard.conftest import Served

FAST_LEASES = ("--heartbeat", "0.2", "--dead-after", "1.0")


def _job(app: currant.App, job_id: int) -> currant.Job:
    job = app.get_job(job_id)
    assert job is not None
    return job


def test_a_killed_worker_is_listed_with_the_jobs_rescued_from_it(
    app: currant.App, spawn_worker: Any, dashboard: Served, db: psycopg.Connection[Any]
) -> None:
    held = [app.enqueue("sleep", (60,)) for _ in range(2)]
    victim = spawn_worker(*FAST_LEASES, "--concurrency", "2")
    wait_for(lambda: all(_job(app, j).state == "running" for j in held), message="both jobs running")
    victim_id = _job(app, held[0]).worker_id
    victim.kill()  # SIGKILL mid-handler: no goodbye, only silence
    rescuer = spawn_worker(*FAST_LEASES, "--queues", "other")  # sweeps, but does not take the jobs back
    wait_for(lambda: all(_job(app, j).rescues == 1 for j in held), message="the rescue")
    row = db.execute(
        f"SELECT worker_id, pid, hostname, queues, concurrency, rescued, poisoned, job_ids"
        f' FROM "{app.schema}".worker_deaths'
    ).fetchone()
    assert row is not None
    assert row[0] == victim_id and row[1] == victim.pid and row[3][0] == "default" and row[4] == 2
    assert (row[5], row[6], sorted(row[7])) == (2, 0, sorted(held))
    with dashboard.client() as client:
        page = client.get("/workers").text
    dead = re.search(r'<table class="deaths">.*?</table>', page, re.S)
    assert dead is not None
    assert f'<td class="n">{victim.pid}</td>' in dead.group(0)
    assert all(f'/jobs/{j}">{j}</a>' in dead.group(0) for j in held)
    live = re.search(r'<table class="workers">.*?</table>', page, re.S)
    assert live is not None and f'<td class="n">{rescuer.pid}</td>' in live.group(0)
    assert f'<td class="n">{victim.pid}</td>' not in live.group(0)
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait() == 0
