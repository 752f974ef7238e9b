"""The short soak (about 90 s, part of every default run and of ``.ci/run``).

Two workers and a producer churn for a minute while the faults of the long
tiers happen one after another: a worker is SIGKILLed (and started again),
every worker connection is terminated, and the server restarts. At the end
nothing acknowledged is lost, duplicates stay inside the windows the README
names, the workers that were not killed are still up, and the queue drained.

The long soak (``-m soak``, tests/faults/test_soak.py) runs for minutes and
checks table sizes and claim latency; this one checks that the engine keeps
its promises under a mixed load, every time the suite runs.
"""

from __future__ import annotations

import os
import time
from typing import Any

import currant
from tests.conftest import wait_for
from tests.faults.checker import assert_no_loss, check_schema
from tests.faults.helpers import Producer, counts, retrying, wait_all_succeeded

# Seconds of churn between faults (CURRANT_SHORT_SOAK_PHASE): 4 phases in all.
PHASE = float(os.environ.get("CURRANT_SHORT_SOAK_PHASE", "12"))
TIMINGS = ("--batch-size", "100", "--heartbeat", "0.5", "--dead-after", "4", "--poll-interval", "0.2")


def _succeeded(cluster_db: Any, schema: str) -> int:
    return int(retrying(lambda: counts(cluster_db, schema).get("succeeded", 0)))


def _churn(cluster_db: Any, schema: str, seconds: float) -> None:
    """Let the load run for a phase, checking all along that jobs keep finishing."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = _succeeded(cluster_db, schema)
        wait_for(lambda: _succeeded(cluster_db, schema) > before, timeout=30, message="jobs keep finishing")
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))  # the phase's length is the scenario


def test_short_soak_churn_through_kills_terminations_and_a_restart(
    pg_cluster: Any, cluster_app: currant.App, cluster_db: Any, cluster_spawn: Any, cluster_schema: str
) -> None:
    schema = cluster_schema
    steady = cluster_spawn(*TIMINGS)
    victim = cluster_spawn(*TIMINGS)
    producer_app = currant.App(pg_cluster.dsn, schema=schema, connect_timeout=2)
    producer = Producer(producer_app, pause=0.002)
    producer.start()
    try:
        _churn(cluster_db, schema, PHASE)
        victim.kill()  # 1. a worker dies mid-work (its jobs are rescued after --dead-after)
        replacement = cluster_spawn(*TIMINGS)
        _churn(cluster_db, schema, PHASE)
        terminated = pg_cluster.terminate_backends()  # 2. every worker connection cut at once
        assert terminated >= 4, terminated
        _churn(cluster_db, schema, PHASE)
        pg_cluster.restart_fast()  # 3. the server restarts under load
        _churn(cluster_db, schema, PHASE)
    finally:
        producer.stop.set()
        producer.join(60)
        producer_app.close()
    assert not producer.is_alive() and producer.acked
    total = len(retrying(lambda: cluster_db.execute(f'SELECT id FROM "{schema}".jobs').fetchall()))
    wait_all_succeeded(cluster_db, schema, total, timeout=90)
    for worker in (steady, replacement):
        assert worker.popen.poll() is None, worker.log()[-3000:]
        assert "Traceback" not in worker.log(), worker.log()[-3000:]
    history = check_schema(cluster_db, schema, producer.acked, attempted=producer.attempted)
    rescued = int(cluster_db.execute(f'SELECT count(*) FROM "{schema}".jobs WHERE rescues > 0').fetchone()[0])
    # Duplicates only in the README's windows: jobs rescued from the killed
    # worker (at most its in-flight ones), a completion or ledger write cut by
    # the terminations and the restart, and retried unknown enqueues.
    assert_no_loss(history, max_duplicates=rescued + len(producer.unknown) + 2 * 100 + 8)
    print(
        f"\nshort soak: acked={len(producer.acked)} unknown={len(producer.unknown)} errors={producer.errors}"
        f" rescued={rescued} duplicates={history.extra_executions} terminated={terminated}"
    )
