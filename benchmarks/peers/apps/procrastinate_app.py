"""procrastinate's app: ``procrastinate --app=benchmarks.peers.apps.procrastinate_app.app worker``.

psycopg 3 connector (procrastinate's default); an async task, which
procrastinate runs on its event loop (sync tasks go through a thread).
"""

from __future__ import annotations

import os

import procrastinate
from benchmarks.peers.ledger import record

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ["PEERS_PG_DSN"]))


@app.task(name="bench_noop")
async def noop(i: int, t: float) -> None:
    record(i, t)
