"""Async handlers run on the worker's event loop: a slot each, not a thread each."""

from __future__ import annotations

import signal
from typing import Any

import currant
from tests.conftest import wait_for


def _results(app: currant.App, ids: list[int]) -> list[dict[str, int]]:
    jobs = [app.get_job(job_id) for job_id in ids]
    assert all(job.state == "succeeded" for job in jobs), [(job.id, job.state, job.error) for job in jobs]
    return [job.result for job in jobs]


def _drain(app: currant.App, ids: list[int], timeout: float = 60) -> None:
    wait_for(
        lambda: all(app.get_job(job_id).state in ("succeeded", "failed") for job_id in ids),
        timeout=timeout,
        message="every job finished",
    )


def test_async_jobs_run_together_without_a_thread_each(app: currant.App, spawn_worker: Any) -> None:
    ids = app.enqueue_many("async_peak", [(2.0,)] * 200, queue="async")
    worker = spawn_worker("--queues", "async", "--concurrency", "200", "--batch-size", "200")
    _drain(app, ids)
    results = _results(app, ids)
    assert max(r["peak"] for r in results) == 200  # all of them at once
    # The loop, the lanes started up front, asyncio's own and the worker's helpers:
    # a few threads, not one per job in flight.
    assert max(r["threads"] for r in results) <= 16, max(r["threads"] for r in results)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_concurrency_bounds_async_and_sync_jobs_together(app: currant.App, spawn_worker: Any) -> None:
    asynchronous = app.enqueue_many("async_peak", [(0.2,)] * 30, queue="async")
    synchronous = app.enqueue_many("sync_peak", [(0.2,)] * 10, queue="async")
    worker = spawn_worker("--queues", "async", "--concurrency", "6", "--batch-size", "20")
    _drain(app, asynchronous + synchronous)
    results = _results(app, asynchronous + synchronous)
    assert 2 <= max(r["peak"] for r in results) <= 6
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_sigterm_waits_for_running_async_jobs(app: currant.App, spawn_worker: Any) -> None:
    ids = app.enqueue_many("async_peak", [(1.5,)] * 20, queue="async")
    worker = spawn_worker("--queues", "async", "--concurrency", "40", "--shutdown-grace", "30")
    wait_for(lambda: len(app.list_jobs("running", queue="async")) == 20, message="all twenty running")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert len(_results(app, ids)) == 20  # finished within the grace period, none cut off
