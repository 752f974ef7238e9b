"""Celery 5 on Redis: ``celery -A benchmarks.peers.apps.celery_app worker ...``.

Configuration follows Celery's optimisation guide for many short tasks: no
result backend (``task_ignore_result``), early acks (the default), and a high
prefetch multiplier ("if you have many tasks with a short duration ... set
the multiplier to a high value"). The harness adds ``--without-gossip
--without-mingle --without-heartbeat`` (cluster chatter a single worker does
not need) and runs the default prefork pool with one child per core.
"""

from __future__ import annotations

import os

from benchmarks.peers.ledger import record
from celery import Celery

app = Celery("peers", broker=os.environ["PEERS_REDIS_URL"])
app.conf.update(
    task_ignore_result=True,
    task_acks_late=False,
    worker_prefetch_multiplier=int(os.environ.get("PEERS_CELERY_PREFETCH", "64")),
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop(i: int, t: float) -> None:
    record(i, t)
