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
