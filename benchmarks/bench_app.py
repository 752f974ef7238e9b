"""The app the benchmark workers run: ``python -m currant.worker benchmarks.bench_app:app``.

``App()`` takes its DSN and schema from ``$CURRANT_DSN`` / ``$CURRANT_SCHEMA``,
so the harness (``benchmarks/e2e.py``) points every run at a fresh schema
without touching this module. The handlers do nothing: the benchmarks measure
the queue, not the work.
"""

from __future__ import annotations

import currant

app = currant.App()


@app.task(name="bench.noop")
def noop() -> None:
    """The throughput case: no arguments, no result (the completion fast path)."""


@app.task(name="bench.small")
def small(data: str) -> None:
    """A job with a ~100 B argument, for payload-size scaling runs."""


@app.task(name="bench.blob")
def blob(data: bytes) -> None:
    """A job with a 10 KB bytes argument (TOASTed payloads), for scaling runs."""


# Canonical arguments, so every run and every script enqueues the same bytes.
SMALL_ARG = "x" * 100
BLOB_ARG = b"\x00" * 10_240
