"""Worker process faults: SIGKILL at chosen points, repeated kills, SIGTERM.

Every test ends with the total-queue check: no acknowledged job lost, and a
job may run twice only if the killed worker held it (running, leased to it)
when it died, i.e. its completion had not been flushed.
"""

from __future__ import annotations

import random
import signal
import time
from typing import Any

import pytest

import currant
from tests.conftest import wait_for
from tests.faults.checker import assert_no_loss, check_schema
from tests.faults.helpers import (
    FAST,
    counts,
    ledger_count,
    ledger_rows,
    running_of,
    wait_all_succeeded,
    worker_id_of,
)


def _enqueue_keys(app: currant.App, task: str, keys: list[str], *extra: Any) -> dict[int, str]:
    ids = app.enqueue_many(task, [(key, *extra) for key in keys])
    assert len(ids) == len(keys)
    return dict(zip(ids, keys, strict=True))


def _started(db: Any, schema: str) -> list[str]:
    """Keys whose ``announce_slowly`` handler began (its ``<key>:started`` mark)."""
    return [key.removesuffix(":started") for key, _, _ in ledger_rows(db, schema) if key.endswith(":started")]


def _finished(db: Any, schema: str) -> list[str]:
    return [key for key, _, _ in ledger_rows(db, schema) if not key.endswith(":started")]


def _drop_start_marks(db: Any, schema: str) -> None:
    """The total-queue check counts one ledger row per execution: keep only the finishing ones."""
    db.execute(f"DELETE FROM \"{schema}\".ledger WHERE key LIKE '%:started'")


def test_sigkill_with_a_full_prefetch_buffer(app: currant.App, db: Any, spawn_worker: Any, schema_name: str) -> None:
    """Killed while ~500 prefetched jobs wait locally: every one is rescued and runs."""
    keys = [f"k{i}" for i in range(600)]
    key_of = _enqueue_keys(app, "record_slowly", keys, 0.01)
    worker = spawn_worker("--batch-size", "500", "--concurrency", "2", *FAST)
    wid = worker_id_of(db, schema_name, worker.pid)
    wait_for(lambda: ledger_count(db, schema_name) >= 20, message="20 side effects")
    assert len(running_of(db, schema_name, [wid])) >= 250, "the prefetch buffer is full"
    worker.kill()
    window = running_of(db, schema_name, [wid])  # leased to the dead worker: may run again
    assert len(window) >= 250
    rescuer = spawn_worker("--batch-size", "500", *FAST)
    wait_all_succeeded(db, schema_name, len(keys))
    window_keys = {key_of[i] for i in window}
    history = assert_no_loss(
        check_schema(db, schema_name, keys, key_of=key_of),
        max_duplicates=len(window),
        duplicates_allowed=window_keys,
    )
    rescued = db.execute(f'SELECT count(*) FROM "{schema_name}".jobs WHERE rescues > 0').fetchone()[0]
    assert rescued == len(window)
    assert rescuer.popen.poll() is None
    print(f"prefetch kill: window={len(window)} duplicates={history.extra_executions}")


@pytest.mark.parametrize(
    "fault",
    ["after_claim_commit=kill", "before_flush@2=kill", "after_flush@2=kill", "after_flush@3=kill"],
)
def test_kill_at_a_fault_point(app: currant.App, db: Any, spawn_worker: Any, schema_name: str, fault: str) -> None:
    """SIGKILL right after the claim commits, or just before/after a completion flush."""
    keys = [f"k{i}" for i in range(200)]
    key_of = _enqueue_keys(app, "record_slowly", keys, 0.002)
    victim = spawn_worker("--batch-size", "100", *FAST, env={"CURRANT_FAULTS": fault})
    assert victim.wait(60) == -signal.SIGKILL, victim.log()[-3000:]
    wid = worker_id_of(db, schema_name, victim.pid)
    window = running_of(db, schema_name, [wid])
    executed_by_victim = {key for key, pid, _ in ledger_rows(db, schema_name) if pid == victim.pid}
    if fault.startswith("after_claim_commit"):
        assert len(window) == 100, "the whole first batch was leased when the worker died"
    spawn_worker("--batch-size", "100", *FAST)
    wait_all_succeeded(db, schema_name, len(keys))
    window_keys = {key_of[i] for i in window}
    history = assert_no_loss(
        check_schema(db, schema_name, keys, key_of=key_of),
        max_duplicates=len(window),
        duplicates_allowed=window_keys,
    )
    # Only what the victim ran without flushing runs again.
    assert set(history.duplicated) <= executed_by_victim & window_keys
    print(
        f"{fault}: window={len(window)} ran-before-kill={len(executed_by_victim)} duplicates={history.extra_executions}"
    )


def test_repeated_random_sigkills(app: currant.App, db: Any, spawn_worker: Any, schema_name: str) -> None:
    """Two workers SIGKILLed and restarted at random over 5,000 jobs, a third one stable."""
    keys = [f"k{i}" for i in range(5000)]
    key_of = _enqueue_keys(app, "record_slowly", keys, 0.001)
    args = ("--batch-size", "100", "--concurrency", "4", "--max-rescues", "1000", *FAST)
    stable = spawn_worker(*args)
    victims = [spawn_worker(*args) for _ in range(2)]
    rng = random.Random(20260807)
    killed_pids: set[int] = set()
    kills = 0
    deadline = time.monotonic() + 20
    while kills < 12 and time.monotonic() < deadline and counts(db, schema_name).get("succeeded", 0) < 4500:
        time.sleep(rng.uniform(0.15, 0.5))  # the scenario: kills at random moments, not synchronisation
        index = rng.randrange(2)
        victims[index].kill()
        killed_pids.add(victims[index].pid)
        kills += 1
        victims[index] = spawn_worker(*args)
    assert kills >= 3, "the drain was too fast to kill anything"
    wait_all_succeeded(db, schema_name, len(keys), timeout=120)
    executions: dict[str, list[int]] = {}
    for key, pid, _ in ledger_rows(db, schema_name):
        executions.setdefault(key, []).append(pid)

    def by_a_killed_worker(key: str) -> bool:  # every run but the last was on a worker that died
        return all(pid in killed_pids for pid in executions[key][:-1])

    history = assert_no_loss(
        check_schema(db, schema_name, keys, key_of=key_of),
        max_duplicates=kills * 100,
        duplicates_allowed=by_a_killed_worker,
    )
    assert stable.popen.poll() is None
    print(f"random kills: {kills} kills, {history.extra_executions} duplicate runs of {len(keys)} jobs")


def test_a_waiting_suspect_never_stalls_the_worker(
    app: currant.App, db: Any, spawn_worker: Any, schema_name: str
) -> None:
    """A rescued job waits until the worker's hands are empty; meanwhile the
    worker keeps heartbeating and completing (a regression: the claimer once
    spun on the event loop here, starving the heartbeat and the completer)."""
    keys = [f"k{i}" for i in range(20)]  # more than one batch: ready jobs wait in the queue too
    key_of = _enqueue_keys(app, "record_slowly", keys, 0.3)
    (suspect_id,) = app.enqueue_many("record_slowly", [("suspect", 0.0)])
    db.execute(f'UPDATE "{schema_name}".jobs SET rescues = 1 WHERE id = %s', (suspect_id,))
    key_of[suspect_id] = "suspect"
    worker = spawn_worker("--batch-size", "5", "--concurrency", "1", *FAST)
    wid = worker_id_of(db, schema_name, worker.pid)
    wait_for(lambda: running_of(db, schema_name, [wid]), message="a batch claimed")
    # The whole drain (21 jobs one at a time, over 6 s: six times dead_after),
    # with jobs held, ready jobs and the suspect waiting: the heartbeat never
    # stops for more than a few of its periods.
    silences: list[float] = []

    def drained_while_heartbeating() -> bool:
        row = db.execute(
            f'SELECT extract(epoch FROM now() - last_seen) FROM "{schema_name}".workers WHERE id = %s', (wid,)
        ).fetchone()
        assert row is not None, "the worker was declared dead"
        silences.append(float(row[0]))
        assert silences[-1] < 0.9, f"the worker stopped heartbeating for {silences[-1]} s"
        return counts(db, schema_name).get("succeeded", 0) == 21

    wait_for(drained_while_heartbeating, timeout=30, interval=0.1, message="21 jobs succeeded")
    assert len(silences) >= 10, silences  # sampled all along the drain
    assert_no_loss(check_schema(db, schema_name, [*keys, "suspect"], key_of=key_of))
    assert "running rescued job" in worker.log()
    assert "declared dead" not in worker.log()


def test_sigterm_is_graceful(app: currant.App, db: Any, spawn_worker: Any, schema_name: str) -> None:
    """One SIGTERM: running jobs finish, prefetched ones go back untouched (attempt refunded), exit 0."""
    keys = [f"k{i}" for i in range(22)]
    key_of = _enqueue_keys(app, "announce_slowly", keys, 1.5)
    worker = spawn_worker("--batch-size", "100", "--concurrency", "2", *FAST)
    wid = worker_id_of(db, schema_name, worker.pid)
    wait_for(lambda: len(running_of(db, schema_name, [wid])) == 22, message="all 22 claimed")
    wait_for(lambda: len(_started(db, schema_name)) == 2, message="both lanes inside their first 1.5 s job")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.log()[-3000:]
    rows = db.execute(
        f'SELECT state::text, attempts, worker_id IS NULL, count(*) FROM "{schema_name}".jobs GROUP BY 1, 2, 3'
    ).fetchall()
    assert sorted(rows) == [("queued", 0, True, 20), ("succeeded", 1, False, 2)], rows
    assert sorted(_finished(db, schema_name)) == sorted(_started(db, schema_name)), "the started ones finished"
    assert db.execute(f'SELECT count(*) FROM "{schema_name}".workers').fetchone()[0] == 0, "deregistered"
    spawn_worker("--batch-size", "100", "--concurrency", "8", *FAST)
    wait_all_succeeded(db, schema_name, len(keys))
    _drop_start_marks(db, schema_name)
    assert_no_loss(check_schema(db, schema_name, keys, key_of=key_of))


def test_second_sigterm_exits_at_once_and_jobs_are_rescued(
    app: currant.App, db: Any, spawn_worker: Any, schema_name: str
) -> None:
    keys = [f"k{i}" for i in range(6)]
    key_of = _enqueue_keys(app, "announce_slowly", keys, 3.0)
    worker = spawn_worker("--batch-size", "100", "--concurrency", "2", *FAST)
    wid = worker_id_of(db, schema_name, worker.pid)
    wait_for(lambda: len(running_of(db, schema_name, [wid])) == 6, message="all claimed")
    wait_for(lambda: len(_started(db, schema_name)) == 2, message="both lanes inside their first 3 s job")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: len(running_of(db, schema_name, [wid])) == 2, message="unstarted jobs handed back")
    worker.signal(signal.SIGTERM)
    assert worker.wait(5) == 1, worker.log()[-3000:]
    assert _finished(db, schema_name) == [], "the forced exit did not wait for the 3 s jobs"
    assert len(running_of(db, schema_name, [wid])) == 2, "its running jobs stay leased until rescued"
    spawn_worker("--concurrency", "8", *FAST)
    wait_all_succeeded(db, schema_name, len(keys))
    _drop_start_marks(db, schema_name)
    assert_no_loss(check_schema(db, schema_name, keys, key_of=key_of))
    rescued = db.execute(f'SELECT count(*) FROM "{schema_name}".jobs WHERE rescues = 1').fetchone()[0]
    assert rescued == 2
