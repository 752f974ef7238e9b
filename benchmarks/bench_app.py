"""The app the benchmark workers run: ``python -m currant.worker benchmarks.bench_app:app``.

``App()`` takes its DSN and schema from ``$CURRANT_DSN`` / ``$CURRANT_SCHEMA``,
so the harness (``benchmarks/e2e.py``) points every run at a fresh schema
without touching this module. The handlers do nothing: the benchmarks measure
the queue, not the work.
"""

from __future__ import annotations

import os
import time

import currant

app = currant.App()
if os.environ.get("CURRANT_BENCH_TRACING") == "1":  # benchmarks/metrics_cost.py: the tracing hook, no exporter
    import currant.tracing

    currant.tracing.instrument(app)


@app.task(name="bench.noop")
def noop() -> None:
    """The throughput case: no arguments, no result (the completion fast path)."""


@app.task(name="bench.small")
def small(data: str) -> None:
    """A job with a ~100 B argument, for payload-size scaling runs."""


@app.task(name="bench.blob")
def blob(data: bytes) -> None:
    """A job with a 10 KB bytes argument (TOASTed payloads), for scaling runs."""


@app.task(name="bench.rate_limited", rate_limit="1000000/s")
def rate_limited() -> None:
    """A no-op under a rate limit too high to hold it back: what the limited claim path costs."""


@app.task(name="bench.capped", max_running=1_000_000)
def capped() -> None:
    """A no-op under a concurrency limit it never reaches."""


@app.task(name="bench.blob_echo")
def blob_echo(data: bytes) -> bytes:
    """10 KB in, the same 10 KB back as the result (benchmarks/payloads.py)."""
    return data


# Canonical arguments, so every run and every script enqueues the same bytes.
SMALL_ARG = "x" * 100
BLOB_ARG = b"\x00" * 10_240


@app.task(name="bench.sleep")
def sleep(seconds: float) -> None:
    """An I/O-bound sync job: one lane thread each."""
    time.sleep(seconds)


@app.task(name="bench.cpu")
def cpu(milliseconds: float) -> None:
    """A CPU-bound job: spins for ``milliseconds`` of this thread's CPU time."""
    end = time.thread_time() + milliseconds / 1000
    while time.thread_time() < end:
        pass
