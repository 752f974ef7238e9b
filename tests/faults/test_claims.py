"""Claim semantics without faults, and the claim plan (T27-T30).

Run straight against the SQL statements the worker sends
(``currant.sql.queries(schema)``), on raw connections.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

import currant
from currant import codec
from currant.worker.completions import id_arrays, register_array_dumpers
from currant.worker.loop import WORK_CONNECTION_OPTIONS
from tests.conftest import wait_for

PAYLOAD = codec.encode_payload((), None)


def _register_workers(db: Any, schema: str, count: int) -> None:
    """Worker rows 1..count: a claim only leases jobs to a registered worker."""
    for worker_id in range(1, count + 1):
        db.execute(
            f"INSERT INTO \"{schema}\".workers (id, hostname, pid, queues) VALUES (%s, 'test', 0, '{{default}}')",
            (worker_id,),
        )


def _connect(dsn: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True, options=WORK_CONNECTION_OPTIONS)
    register_array_dumpers(conn)
    return conn


def test_six_racing_claimers_never_claim_a_job_twice(app: currant.App, database_dsn: str, db: Any,
                                                     schema_name: str) -> None:
    ids = app.enqueue_many("noop", [()] * 6000)
    _register_workers(db, schema_name, 6)
    claim = app.sql["claim"]
    claimed: list[list[tuple[int, int]]] = [[] for _ in range(6)]
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def claimer(index: int) -> None:
        rng = random.Random(index)
        try:
            with _connect(database_dsn) as conn:
                barrier.wait()
                empty = 0
                while empty < 2:
                    rows = conn.execute(claim, {"queue": "default", "limit": rng.randint(1, 60),
                                                "worker": index + 1}, prepare=True).fetchall()
                    empty = 0 if rows else empty + 1
                    claimed[index].extend((row[0], row[1]) for row in rows)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    every = [job_id for rows in claimed for job_id, _ in rows]
    twice = [job_id for job_id, n in Counter(every).items() if n > 1]
    assert not twice, f"claimed more than once: {twice[:10]}"
    assert sorted(every) == sorted(ids)
    assert all(attempt == 1 for rows in claimed for _, attempt in rows)
    assert all(rows for rows in claimed), "every claimer got some work"
    owners = dict(db.execute(f'SELECT id, worker_id FROM "{schema_name}".jobs WHERE state = \'running\'').fetchall())
    assert len(owners) == len(ids)
    for index, rows in enumerate(claimed):
        assert all(owners[job_id] == index + 1 for job_id, _ in rows)


def test_two_claimers_one_job_exactly_one_winner(app: currant.App, database_dsn: str, db: Any,
                                                 schema_name: str) -> None:
    _register_workers(db, schema_name, 2)
    claim = app.sql["claim"]
    conns = [_connect(database_dsn) for _ in range(2)]
    try:
        for _ in range(150):
            job_id = app.enqueue("noop")
            barrier = threading.Barrier(2)
            results: list[list[Any]] = [[], []]

            def take(i: int) -> None:
                barrier.wait()
                results[i] = conns[i].execute(claim, {"queue": "default", "limit": 1, "worker": i + 1},
                                              prepare=True).fetchall()

            threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            winners = [rows for rows in results if rows]
            assert len(winners) == 1 and winners[0][0][0] == job_id, results
    finally:
        for conn in conns:
            conn.close()


# -- the claim plan (T29) ----------------------------------------------------------------


def _claim_plan(conn: Any, sql: str, generic: bool) -> str:
    conn.execute(f"SET plan_cache_mode = {'force_generic_plan' if generic else 'auto'}")
    rows = conn.execute("EXPLAIN " + sql, {"queue": "default", "limit": 1000, "worker": 1}).fetchall()
    return "\n".join(row[0] for row in rows)


def test_claim_uses_the_partial_index_with_a_backlog_and_dead_tuples(app: currant.App, database_dsn: str,
                                                                      db: Any, schema_name: str) -> None:
    jobs = f'"{schema_name}".jobs'
    db.execute(f"ALTER TABLE {jobs} SET (autovacuum_enabled = false)")
    app.enqueue_many("noop", [()] * 100_000)
    app.enqueue_many("noop", [()] * 60_000, queue="churn")
    # Churn without vacuum: dead versions in the heap and in jobs_claim_idx.
    db.execute(f"UPDATE {jobs} SET state = 'running', worker_id = 1 WHERE queue = 'churn'")
    db.execute(f"UPDATE {jobs} SET state = 'succeeded', finished_at = now() WHERE queue = 'churn'")
    db.execute(f"DELETE FROM {jobs} WHERE queue = 'churn' AND id % 2 = 0")
    db.execute(f"UPDATE {jobs} SET state = 'running' WHERE queue = 'default' AND id % 3 = 0")
    db.execute(f"UPDATE {jobs} SET state = 'queued' WHERE queue = 'default' AND id % 3 = 0")
    dead = db.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %s::regclass", (jobs,)).fetchone()
    _register_workers(db, schema_name, 1)
    claim = app.sql["claim"]
    with _connect(database_dsn) as conn:
        plans = {}
        for analyzed in (False, True):
            if analyzed:
                conn.execute(f"ANALYZE {jobs}")
            for generic in (False, True):
                plan = _claim_plan(conn, claim, generic)
                plans[(analyzed, generic)] = plan
                assert "jobs_claim_idx" in plan, plan
                assert "Seq Scan on jobs" not in plan, plan
        # And it claims in index order, fast, despite the churn.
        rows = conn.execute(claim, {"queue": "default", "limit": 1000, "worker": 1}).fetchall()
        assert len(rows) == 1000
    print(f"dead tuples before ANALYZE: {dead}; analyzed generic plan:\n{plans[(True, True)]}")


# -- a stateful model of the SQL (T30) ----------------------------------------------------------

LEGAL = {
    ("queued", "running"), ("queued", "cancelled"),
    ("scheduled", "queued"), ("scheduled", "cancelled"),
    ("retrying", "queued"), ("retrying", "cancelled"),
    ("running", "succeeded"), ("running", "retrying"), ("running", "failed"), ("running", "cancelled"),
    ("running", "queued"),
}
FINISHED = {"succeeded", "failed", "cancelled"}
SLOTS = 3
STATS: Counter[str] = Counter()


def _machine(dsn: str, app: currant.App) -> type[RuleBasedStateMachine]:
    sql = app.sql
    schema = f'"{app.schema}"'
    conn = _connect(dsn)

    class QueueMachine(RuleBasedStateMachine):
        """Enqueue/claim/complete/fail/release/crash/sweep/cancel against the real statements."""

        @initialize()
        def reset(self) -> None:
            conn.execute(f"TRUNCATE {schema}.jobs, {schema}.workers RESTART IDENTITY")
            self.worker_ids = [self._register() for _ in range(SLOTS)]
            self.crashed: set[int] = set()  # slots whose worker stopped heartbeating
            self.held: list[dict[int, int]] = [{} for _ in range(SLOTS)]  # slot -> {job: attempt}
            self.zombies: list[tuple[int, int, int]] = []  # (job, attempt, worker id) of swept workers
            self.enqueued = 0
            self.snapshot: dict[int, tuple[str, int, int | None]] = {}
            self.released: set[int] = set()

        def _register(self) -> int:
            return int(conn.execute(sql["register_worker"],
                                    {"hostname": "model", "pid": 0, "queues": ["default"]}).fetchone()[0])

        @rule(n=st.integers(1, 3), delayed=st.booleans())
        def enqueue(self, n: int, delayed: bool) -> None:
            for _ in range(n):
                conn.execute(sql["enqueue_one"], {
                    "queue": "default", "task": "noop", "payload": PAYLOAD, "priority": 0, "max_attempts": 3,
                    "run_at": None, "delay": 0.0 if not delayed else 0.000001, "unique_key": None,
                    "channel": app.channel})
                self.enqueued += 1

        @rule(slot=st.integers(0, SLOTS - 1), n=st.integers(1, 4))
        def claim(self, slot: int, n: int) -> None:
            rows = conn.execute(sql["claim"], {"queue": "default", "limit": n,
                                               "worker": self.worker_ids[slot]}).fetchall()
            for job_id, attempt, _task, _payload in rows:
                before = self.snapshot.get(job_id)
                assert before is not None and before[0] in ("queued", "scheduled", "retrying"), (job_id, before)
                assert attempt == before[1] + 1
                self.held[slot][job_id] = attempt

        def _finish(self, slot: int, pick: int, kind: str | None) -> None:
            if not self.held[slot]:
                return
            job_id = sorted(self.held[slot])[pick % len(self.held[slot])]
            attempt = self.held[slot].pop(job_id)
            ids, attempts = id_arrays([(job_id, attempt)])
            worker = self.worker_ids[slot]
            if kind is None:
                cur = conn.execute(sql["complete_succeeded"], {"ids": ids, "attempts": attempts, "worker": worker})
                assert cur.rowcount == 1, "a live lease completes"
            else:
                rows = conn.execute(sql["complete_outcomes"], {
                    "ids": ids, "attempts": attempts, "kinds": [kind], "results": [None], "errors": ["E: x"],
                    "tracebacks": [None], "delays": [0.0], "max_attempts": [3], "worker": worker}).fetchall()
                assert len(rows) == 1

        @rule(slot=st.integers(0, SLOTS - 1), pick=st.integers(0, 10))
        def complete(self, slot: int, pick: int) -> None:
            self._finish(slot, pick, None)

        @rule(slot=st.integers(0, SLOTS - 1), pick=st.integers(0, 10), kind=st.sampled_from(["r", "f", "s", "c"]))
        def fail(self, slot: int, pick: int, kind: str) -> None:
            self._finish(slot, pick, kind)

        @rule(slot=st.integers(0, SLOTS - 1))
        def release(self, slot: int) -> None:
            if not self.held[slot]:
                return
            ids, attempts = id_arrays(sorted(self.held[slot].items()))
            rows = conn.execute(sql["release"], {"ids": ids, "attempts": attempts,
                                                 "worker": self.worker_ids[slot]}).fetchall()
            assert len(rows) == len(self.held[slot])
            self.released |= set(self.held[slot])
            self.held[slot].clear()

        @rule(slot=st.integers(0, SLOTS - 1))
        def crash(self, slot: int) -> None:
            conn.execute(f"UPDATE {schema}.workers SET last_seen = now() - interval '1 hour' WHERE id = %s",
                         (self.worker_ids[slot],))
            self.crashed.add(slot)

        @rule()
        def sweep(self) -> None:
            self.last_sweep = conn.execute(sql["maintain"], {
                "worker": 0, "queues": ["default"], "running": [], "dead_after": 1.0, "max_rescues": 3,
                "keep_succeeded": 1e9, "keep_failed": 1e9, "prune_batch": 1000, "channel": app.channel}).fetchone()
            for slot in sorted(self.crashed):
                # The dead worker's registration is gone: what it held is now a zombie's.
                self.zombies.extend((job, attempt, self.worker_ids[slot]) for job, attempt in self.held[slot].items())
                self.held[slot].clear()
                self.worker_ids[slot] = self._register()
            self.crashed.clear()

        @rule(pick=st.integers(0, 50))
        def zombie_completes(self, pick: int) -> None:
            if not self.zombies:
                return
            job_id, attempt, worker = self.zombies[pick % len(self.zombies)]
            ids, attempts = id_arrays([(job_id, attempt)])
            cur = conn.execute(sql["complete_succeeded"], {"ids": ids, "attempts": attempts, "worker": worker})
            assert cur.rowcount == 0, "a swept worker's completion is fenced off"

        @rule(pick=st.integers(0, 50))
        def cancel(self, pick: int) -> None:
            if self.enqueued:
                conn.execute(sql["cancel"], {"id": pick % self.enqueued + 1, "channel": app.channel})

        @invariant()
        def consistent(self) -> None:
            rows = conn.execute(f"SELECT id, state::text, attempts, worker_id FROM {schema}.jobs").fetchall()
            live_workers = {row[0] for row in conn.execute(f"SELECT id FROM {schema}.workers").fetchall()}
            assert len(rows) == self.enqueued, "no job appears or disappears"
            now = {job_id: (state, attempts, worker) for job_id, state, attempts, worker in rows}
            held = {job: (self.worker_ids[slot], attempt) for slot in range(SLOTS)
                    for job, attempt in self.held[slot].items()}
            for job_id, (state, attempts, worker) in now.items():
                before = self.snapshot.get(job_id)
                if state == "running":
                    assert worker is not None and worker in live_workers, ("running without a live owner", job_id, getattr(self, "last_sweep", None))
                    assert held.get(job_id) == (worker, attempts), ("running but not held", job_id, held.get(job_id), getattr(self, "last_sweep", None), live_workers)
                elif state in ("queued", "scheduled", "retrying"):
                    assert worker is None, ("waiting job keeps an owner", job_id)
                if before is None:
                    assert state in ("queued", "scheduled") and attempts == 0
                    continue
                old_state, old_attempts, _ = before
                if old_state in FINISHED:
                    assert state == old_state, ("a finished job moved", job_id, old_state, state)
                if state != old_state:
                    assert (old_state, state) in LEGAL or (old_state, state) == ("running", "running"), (
                        job_id, old_state, state)
                if attempts < old_attempts:
                    assert job_id in self.released and attempts == old_attempts - 1, ("attempts went down", job_id)
            for job_id in held:
                assert now[job_id][0] == "running", ("a held job is not running", job_id, now[job_id])
            STATS["checks"] += 1
            STATS.update(f"state:{state}" for state, _, _ in now.values())
            STATS["zombie fences"] = max(STATS["zombie fences"], len(self.zombies))
            self.snapshot = now
            self.released = set()

    QueueMachine.TestCase.settings = settings(
        max_examples=25, stateful_step_count=30, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    QueueMachine.conn = conn  # type: ignore[attr-defined]
    return QueueMachine


def test_state_machine_against_the_sql(app: currant.App, database_dsn: str, db: Any,
                                       request: pytest.FixtureRequest) -> None:
    # maintain() declares no worker dead before the server has been up for
    # dead_after (silence while the server was down is not death): a server
    # started for this run may be younger than that.
    wait_for(
        lambda: db.execute("SELECT now() - pg_postmaster_start_time() > interval '1.5 seconds'").fetchone()[0],
        timeout=10, message="server up longer than dead_after",
    )
    machine = _machine(database_dsn, app)
    try:
        run_state_machine_as_test(machine, settings=machine.TestCase.settings)
    finally:
        machine.conn.close()  # type: ignore[attr-defined]
    print(dict(STATS))
    assert STATS["checks"] > 200 and STATS["state:running"] > 0
