"""RQ's job function: ``rq worker --burst --url URL [--worker-class ...] default``.

The default ``rq worker`` forks a work horse per job, and the horse leaves
with ``os._exit`` (no atexit), so under it (``PEERS_LEDGER_SYNC=1``, set by
the harness) the ledger is flushed synchronously: one RPUSH per job, next to
the dozen Redis commands RQ itself spends on each job. ``SimpleWorker`` runs
jobs in the worker process, where the ledger's background flush works as for
every other system.
"""

from __future__ import annotations

import os

from benchmarks.peers.ledger import flush, record

_SYNC = os.environ.get("PEERS_LEDGER_SYNC") == "1"


def noop(i: int, t: float) -> None:
    record(i, t)
    if _SYNC:
        flush()
