"""pgqueuer's factory, and its worker: ``python -m benchmarks.peers.apps.pgqueuer_app``.

The worker is ``pgqueuer.run(factory, ...)``, which pgqueuer documents as "run a
worker from *factory*, as ``pgq run`` does, without the CLI": ``pgq run`` itself
fails at start-up in pgqueuer 1.6.0 with typer 0.29 (its ``--log-level``
parser hands ``setup_fancy_logger`` a str), so the CLI cannot be used as is.

asyncpg driver as in pgqueuer's README; an async entrypoint (pgqueuer runs it
on its event loop). The payload is ``b"<id> <enqueue time>"``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
import pgqueuer
from benchmarks.peers.ledger import record
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    # 1.6 wants an async context manager (the README's plain coroutine is refused).
    connection = await asyncpg.connect(os.environ["PEERS_PG_DSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        assert job.payload is not None
        i, t = job.payload.split()
        record(int(i), float(t))

    try:
        yield pgq
    finally:
        await connection.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--mode", choices=["drain", "continuous"], default="continuous")
    args = parser.parse_args()
    asyncio.run(
        pgqueuer.run(
            "benchmarks.peers.apps.pgqueuer_app:main",
            batch_size=args.batch_size,
            mode=QueueExecutionMode[args.mode],
            dequeue_timeout=timedelta(seconds=30),
        )
    )
