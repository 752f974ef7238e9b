"""The app of ``benchmarks/pickup.py``'s worker: one task and nothing else.

Apart from ``bench_app`` because that app declares limited tasks, and a
worker of an app with limited tasks runs a second claim statement
(``claim_limited``) in every claim round: the common app has none.
DSN and schema from ``$CURRANT_DSN`` / ``$CURRANT_SCHEMA``.
"""

from __future__ import annotations

import os
import time

import currant

app = currant.App()


@app.task(name="bench.stamp")
def stamp(sent: float) -> None:
    """The caller's clock at enqueue and this handler's first line, appended to $BENCH_STAMPS."""
    now = time.time()
    with open(os.environ["BENCH_STAMPS"], "a") as out:
        out.write(f"{sent!r} {now!r}\n")
