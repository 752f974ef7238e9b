"""``bench_app`` plus an async task: ``python -m currant.worker benchmarks.bench_async_app:app``.

A separate module because an app with an async task runs every job under
``--concurrency`` slots (currant.worker.lanes): the drain benchmarks of
sync no-op jobs must not pay for them.
"""

from __future__ import annotations

import asyncio

from benchmarks.bench_app import app

__all__ = ["app"]


@app.task(name="bench.async_sleep")
async def async_sleep(seconds: float) -> None:
    """An I/O-bound async job: what the event loop, not a thread, should carry."""
    await asyncio.sleep(seconds)
