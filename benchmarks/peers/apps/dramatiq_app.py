"""Dramatiq with its Redis broker: ``dramatiq benchmarks.peers.apps.dramatiq_app``.

Worker defaults (one process per core, 8 threads each, the broker's default
prefetch); ``max_retries=0`` because a no-op cannot fail and retries are not
being measured.
"""

from __future__ import annotations

import os

import dramatiq
from benchmarks.peers.ledger import record
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["PEERS_REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop", queue_name="default", max_retries=0)
def noop(i: int, t: float) -> None:
    record(i, t)
