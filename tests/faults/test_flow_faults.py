"""Workflows under faults (issue 15): workers killed at random, backends
terminated, the server restarted while completions release dependents.

What must hold, checked on every run:

* nothing stuck: every job (members, callbacks, chain steps, dependents) ends
  ``succeeded`` (their tasks always succeed), none stays ``waiting``;
* a callback or a dependent job runs only after each of its parents'
  completions committed (its side effect is later than their ``finished_at``);
* exactly one callback job per group, and a job runs more than once only if
  it was leased to a worker that died (the total-queue check's window).
"""

from __future__ import annotations

import random
import signal
import time
from typing import Any

import pytest

import currant
from currant.flow import Call
from tests.conftest import wait_for
from tests.faults.checker import assert_no_loss, check_schema
from tests.faults.helpers import FAST, counts, retrying, running_of, worker_id_of

GROUPS, MEMBERS, CHAINS = 12, 5, 12


def _enqueue_workflows(app: currant.App) -> tuple[dict[int, str], dict[str, list[str]]]:
    """Groups with a callback, chains of three, and jobs with two parents.
    Returns (job id -> key, key -> the keys of its parents)."""
    key_of: dict[int, str] = {}
    parents: dict[str, list[str]] = {}
    for g in range(GROUPS):
        members = [Call("record_slowly", (f"g{g}.m{m}", 0.02 * (m % 3))) for m in range(MEMBERS)]
        ids = app.group(members, callback=Call("record_callback", (f"g{g}.cb",)))
        member_keys = [f"g{g}.m{m}" for m in range(MEMBERS)]
        key_of.update(zip(ids.member_ids, member_keys, strict=True))
        assert ids.callback_id is not None
        key_of[ids.callback_id] = f"g{g}.cb"
        parents[f"g{g}.cb"] = member_keys
    for c in range(CHAINS):
        steps = [f"c{c}.s{s}" for s in range(3)]
        ids = app.chain([Call("record_slowly", (key, 0.03)) for key in steps])
        key_of.update(zip(ids, steps, strict=True))
        parents.update({steps[1]: [steps[0]], steps[2]: [steps[1]]})
        both = app.enqueue("record", (f"c{c}.both",), depends_on=[ids[0], ids[2]])
        key_of[both] = f"c{c}.both"
        parents[f"c{c}.both"] = [steps[0], steps[2]]
    return key_of, parents


def _check(
    db: Any, schema: str, key_of: dict[int, str], parents: dict[str, list[str]], window: set[int] | None, extra: int
) -> None:
    """``window``: the jobs that may run twice (None: any, at most ``extra`` runs in all)."""
    assert counts(db, schema) == {"succeeded": len(key_of)}, counts(db, schema)
    callbacks = db.execute(f'SELECT count(*) FROM "{schema}".groups WHERE callback_id IS NOT NULL').fetchone()[0]
    assert callbacks == GROUPS
    finished = {key_of[i]: at for i, at in db.execute(f'SELECT id, finished_at FROM "{schema}".jobs').fetchall()}
    first_run: dict[str, Any] = {}
    for key, at in db.execute(f'SELECT key, at FROM "{schema}".ledger ORDER BY at').fetchall():
        first_run.setdefault(key, at)
    early = [(child, parent) for child, of in parents.items() for parent in of if first_run[child] < finished[parent]]
    assert not early, f"ran before a parent's completion committed: {early[:5]}"
    assert_no_loss(
        check_schema(db, schema, list(key_of.values()), key_of=key_of),
        max_duplicates=extra,
        duplicates_allowed=None if window is None else {key_of[i] for i in window},
    )


def test_workflows_survive_workers_killed_at_random(
    app: currant.App, db: Any, spawn_worker: Any, schema_name: str
) -> None:
    key_of, parents = _enqueue_workflows(app)
    rng = random.Random(15)
    # Kills come faster than jobs finish: a job may be rescued more than
    # --max-rescues times and fail as poison, which is not what this tests.
    options = ("--concurrency", "4", "--max-rescues", "100", *FAST)
    workers = [spawn_worker(*options) for _ in range(3)]
    window: set[int] = set()  # jobs leased to a killed worker: they may run twice
    kills = 0
    deadline = time.monotonic() + 120
    while counts(db, schema_name).get("succeeded", 0) < len(key_of) and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.1, 0.3))  # the fault schedule's own pace, not a synchronisation
        victim = workers.pop(rng.randrange(len(workers)))
        victim_id = worker_id_of(db, schema_name, victim.pid)
        victim.kill()
        window |= running_of(db, schema_name, [victim_id])
        kills += 1
        workers.append(spawn_worker(*options))
    wait_for(
        lambda: counts(db, schema_name).get("succeeded", 0) == len(key_of),
        timeout=60,
        message=f"every workflow job done; states: {counts(db, schema_name)}",
    )
    assert kills >= 3
    _check(db, schema_name, key_of, parents, window, len(window))


@pytest.mark.parametrize("fault", ["terminate", "restart", "crash"])
def test_workflows_survive_backend_and_server_faults(
    pg_cluster: Any, cluster_app: currant.App, cluster_db: Any, cluster_spawn: Any, cluster_schema: str, fault: str
) -> None:
    """Backends terminated, or the server restarted (fast, or crashed), three times while
    completions release callbacks and dependents: each in the completing transaction, or not at all."""
    schema = cluster_schema
    key_of, parents = _enqueue_workflows(cluster_app)
    args = ("--concurrency", "4", "--heartbeat", "0.3", "--dead-after", "10", "--poll-interval", "0.2")
    workers = [cluster_spawn(*args) for _ in range(2)]
    for round_ in range(3):
        wait_for(
            lambda n=round_: retrying(lambda: counts(cluster_db, schema).get("succeeded", 0)) > (n + 1) * 10,
            timeout=60,
            message="completions flowing",
        )
        if fault == "terminate":
            # Workers may be between connections (reconnecting after the last round): wait for one.
            wait_for(lambda: pg_cluster.terminate_backends() > 0, timeout=30, message="a worker session to terminate")
        elif fault == "restart":
            pg_cluster.restart_fast()
        else:
            pg_cluster.crash_restart(down_for=0.3)
    wait_for(
        lambda: retrying(lambda: counts(cluster_db, schema).get("succeeded", 0)) == len(key_of),
        timeout=90,
        interval=0.2,
        message="every workflow job done",
    )
    for worker in workers:
        assert worker.popen.poll() is None, worker.log()[-3000:]
        worker.signal(signal.SIGTERM)
    # A terminated backend or a restart may cut a ledger write or a completion whose handler
    # ran: that job runs again (never its dependents early), a few times at most.
    _check(cluster_db, schema, key_of, parents, None, 8)
