"""Currant's benchmark app: ``python -m currant.worker benchmarks.peers.apps.currant_app:app``.

``App()`` takes ``$CURRANT_DSN`` / ``$CURRANT_SCHEMA`` from the harness. A
sync handler, Currant's documented fast path (run on the worker's thread lanes).
"""

from __future__ import annotations

import currant
from benchmarks.peers.ledger import record

app = currant.App()


@app.task(name="bench.noop")
def noop(i: int, t: float) -> None:
    record(i, t)
