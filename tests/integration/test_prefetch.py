"""The prefetch follows the jobs: more per claim while they are short."""

from __future__ import annotations

import currant
from tests.conftest import run_worker_here


def test_a_drain_of_short_jobs_claims_more_than_a_batch_per_round_trip(app: currant.App) -> None:
    ran: list[int] = []

    @app.task(name="nothing")
    def nothing(i: int) -> None:
        ran.append(i)

    nothing.enqueue_many([(i,) for i in range(20_000)])
    worker = run_worker_here(app, batch_size=100)
    assert sorted(ran) == list(range(20_000)), "every job ran once"
    # At 100 per claim this took 200 claims (and an empty one). The lanes empty
    # a local queue of no-op jobs faster than one claim of them commits, so the
    # claim grows to 800; most of the drain goes at that size.
    assert worker.state.claims < 120, worker.state.claims


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
