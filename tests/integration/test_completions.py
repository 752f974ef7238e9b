"""Plain successes complete with one statement per attempt number (the
completer's scalar fence): batches that mix first attempts with retries, and
the worker's own count of what was recorded when part of a batch was fenced."""

from __future__ import annotations

from typing import Any

import psycopg

import currant
from tests.conftest import run_worker_here


def test_successes_of_different_attempts_complete_in_one_flush(app: currant.App) -> None:
    """A completion batch mixes first attempts with retries: each attempt
    number is its own fenced statement, and every job is recorded once."""
    ran: list[tuple[int, int]] = []

    @app.task(name="second_time_lucky", retry_backoff=0.0)
    def second_time_lucky(i: int) -> None:
        attempt = currant.current_job().attempt
        ran.append((i, attempt))
        if attempt == 1 and i % 2:
            raise RuntimeError("first attempt of an odd one")

    ids = second_time_lucky.enqueue_many([(i,) for i in range(2_000)])
    run_worker_here(app, concurrency=8, batch_size=50)
    jobs = [app.get_job(job_id) for job_id in ids]
    assert [(job.state, job.attempts) for job in jobs if job is not None] == [
        ("succeeded", 2 if i % 2 else 1) for i in range(2_000)
    ]
    assert sorted(ran) == sorted([(i, 1) for i in range(2_000)] + [(i, 2) for i in range(1, 2_000, 2)])


def test_a_fenced_retry_is_not_counted_as_succeeded(
    app: currant.App, db: psycopg.Connection[Any], database_dsn: str
) -> None:
    """Job 7 loses its lease during its second attempt (another owner takes the
    row): its completion changes nothing, and the worker counts 39 successes,
    not 40, though the other second attempts complete beside it."""

    @app.task(name="loses_its_lease", retry_backoff=0.0)
    def loses_its_lease(i: int) -> None:
        attempt = currant.current_job().attempt
        if attempt == 1 and i % 2:
            raise RuntimeError("first attempt of an odd one")
        if i == 7:
            with psycopg.connect(database_dsn, autocommit=True) as conn:
                conn.execute(
                    f'UPDATE "{app.schema}".jobs SET worker_id = -1 WHERE id = %s', (currant.current_job().id,)
                )

    ids = loses_its_lease.enqueue_many([(i,) for i in range(40)])
    run_worker_here(app, concurrency=4, batch_size=10)
    states = {job_id: (job.state, job.attempts) for job_id in ids if (job := app.get_job(job_id)) is not None}
    assert states.pop(ids[7]) == ("running", 2), "the fenced completion changed nothing"
    assert set(states.values()) == {("succeeded", 1), ("succeeded", 2)}
    (succeeded,) = db.execute(
        f"SELECT coalesce(sum(jobs), 0)::int FROM \"{app.schema}\".activity WHERE outcome = 'succeeded'"
    ).fetchone()
    assert succeeded == 39
