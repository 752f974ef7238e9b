"""The prefetch follows the jobs: more per claim while they are short."""

from __future__ import annotations

from typing import Any

import currant
from tests.conftest import run_worker_here, state_counts, wait_for


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


def test_slow_jobs_go_to_every_worker_with_a_free_lane(app: currant.App, spawn_worker: Any, db: Any) -> None:
    """A backlog of slow jobs is not hoarded by the worker that claimed
    first: it holds about what its lanes start soon, and the other worker's
    free lanes run the rest. (At a claim of --batch-size, 1,000, the first
    worker took all 16 and the second ran none.)"""
    workers = [spawn_worker("--concurrency", "2", "--poll-interval", "0.2") for _ in range(2)]
    wait_for(
        lambda: db.execute(f'SELECT count(*) FROM "{app.schema}".workers').fetchone()[0] == 2,
        message="both workers registered",
    )
    app.enqueue_many("record_slowly", [(f"slow-{i}", 0.2) for i in range(16)])
    wait_for(lambda: state_counts(db, app.schema).get("succeeded") == 16, message="all 16 slow jobs succeeded")
    per_worker = db.execute(f'SELECT worker_id, count(*) FROM "{app.schema}".jobs GROUP BY 1').fetchall()
    assert len(per_worker) == 2 and min(count for _worker, count in per_worker) >= 4, per_worker
    for worker in workers:
        worker.kill()


def test_a_worker_whose_lanes_are_busy_holds_one_claim_of_lanes_beside_them(
    app: currant.App, spawn_worker: Any, db: Any
) -> None:
    """Lanes that took every job of the first claim are busy, not dry: the
    second claim must not double the size. Held: 2 running + 2 waiting."""
    app.enqueue_many("record_slowly", [(f"held-{i}", 0.3) for i in range(12)])
    most_held = [0]

    def four_done() -> bool:
        row = db.execute(f"SELECT count(*) FROM \"{app.schema}\".jobs WHERE state = 'running'").fetchone()
        most_held[0] = max(most_held[0], int(row[0]))
        return int(db.execute(f'SELECT count(*) FROM "{app.schema}".ledger').fetchone()[0]) >= 4

    worker = spawn_worker("--concurrency", "2")
    wait_for(four_done, message="two rounds of jobs ran")
    assert most_held[0] == 4, most_held
    worker.kill()
