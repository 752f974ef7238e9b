"""Claim semantics without faults, and the claim plan (T27-T30).

Run straight against the SQL statements the worker sends
(``currant.sql.queries(schema)``), on raw connections.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

import currant
from currant import codec
from currant.worker.arrays import id_arrays, int8_array, register_array_dumpers
from currant.worker.links import WORK_CONNECTION_OPTIONS

PAYLOAD = codec.encode_payload((), None)
# maintain() also takes what a worker finished since its last heartbeat: nothing, here.
NO_ACTIVITY: dict[str, list[Any]] = {"done_queues": [], "done_tasks": [], "done_outcomes": [], "done_counts": []}


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


def test_six_racing_claimers_never_claim_a_job_twice(
    app: currant.App, database_dsn: str, db: Any, schema_name: str
) -> None:
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
                    rows = conn.execute(
                        claim, {"queue": "default", "limit": rng.randint(1, 60), "worker": index + 1}, prepare=True
                    ).fetchall()
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
    owners = dict(db.execute(f"SELECT id, worker_id FROM \"{schema_name}\".jobs WHERE state = 'running'").fetchall())
    assert len(owners) == len(ids)
    for index, rows in enumerate(claimed):
        assert all(owners[job_id] == index + 1 for job_id, _ in rows)


def test_two_claimers_one_job_exactly_one_winner(
    app: currant.App, database_dsn: str, db: Any, schema_name: str
) -> None:
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
                results[i] = (
                    conns[i].execute(claim, {"queue": "default", "limit": 1, "worker": i + 1}, prepare=True).fetchall()
                )

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


def test_claim_uses_the_partial_index_with_a_backlog_and_dead_tuples(
    app: currant.App, database_dsn: str, db: Any, schema_name: str
) -> None:
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


def test_claim_never_walks_the_primary_key_on_stale_statistics(
    app: currant.App, database_dsn: str, db: Any, schema_name: str
) -> None:
    """Analyzed right after a bulk enqueue, the statistics say every job is
    queued; most are finished before the next ANALYZE (a fast drain). "ORDER
    BY id" would then let the planner walk the primary key from the oldest,
    finished, jobs on; the claim must stay on jobs_claim_idx."""
    jobs = f'"{schema_name}".jobs'
    db.execute(f"ALTER TABLE {jobs} SET (autovacuum_enabled = false)")
    ids = app.enqueue_many("noop", [()] * 50_000)
    db.execute(f"ANALYZE {jobs}")
    db.execute(f"UPDATE {jobs} SET state = 'succeeded', finished_at = now() WHERE id < %s", (ids[45_000],))
    _register_workers(db, schema_name, 1)
    claim = app.sql["claim"]
    with _connect(database_dsn) as conn:
        for generic in (False, True):
            plan = _claim_plan(conn, claim, generic)
            assert "jobs_claim_idx" in plan and "Index Scan using jobs_pkey on jobs jobs_" not in plan, plan
        rows = conn.execute(claim, {"queue": "default", "limit": 1000, "worker": 1}).fetchall()
        assert [row[0] for row in rows] == ids[45_000:46_000]


# -- a stateful model of the SQL (T30) ----------------------------------------------------------
#
# Time passes on the database side only: the machine moves the database clock
# (``currant.clock_offset``, read by ``{schema}.clock()`` once
# ``{schema}.use_test_clock(true)`` turned it on) instead of sleeping,
# so leases expire, backoffs and delays end and retention runs out within one
# example. Each rule reads the clock right before its statement; the
# statement's own clock is at most MARGIN later.

LEGAL = {
    ("queued", "running"),
    ("queued", "cancelled"),
    ("scheduled", "queued"),
    ("scheduled", "cancelled"),
    ("retrying", "queued"),
    ("retrying", "cancelled"),
    ("running", "succeeded"),
    ("running", "retrying"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "queued"),
}
FINISHED = {"succeeded", "failed", "cancelled"}
WAITING = {"scheduled", "retrying"}
SLOTS = 3
DEAD_AFTER = 30.0
KEEP_SUCCEEDED = 60.0
KEEP_FAILED = 120.0
MARGIN = timedelta(seconds=0.5)
STATS: Counter[str] = Counter()


def _machine(dsn: str, app: currant.App) -> type[RuleBasedStateMachine]:
    sql = app.sql
    schema = f'"{app.schema}"'
    conn = _connect(dsn)
    # maintain() runs on a plain connection, as in the worker: the planner
    # settings of the work connection make it 100 times slower.
    maint_conn = psycopg.connect(dsn, autocommit=True)
    server_start = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    # clock() honours currant.clock_offset only once the schema's owner turns the test clock on.
    conn.execute(f"SELECT {schema}.use_test_clock(true)")

    def clock() -> datetime:
        return conn.execute(f"SELECT {schema}.clock()").fetchone()[0]

    def older_than(moment: datetime, then: datetime, seconds: float) -> bool:
        return (moment - then).total_seconds() > seconds

    class QueueMachine(RuleBasedStateMachine):
        """Enqueue/claim/complete/fail/release/crash/heartbeat/sweep/cancel, with a moving
        database clock, against the real statements."""

        @initialize()
        def reset(self) -> None:
            self.offset = 0.0
            for session in (conn, maint_conn):
                session.execute("SELECT set_config('currant.clock_offset', '0 seconds', false)")
            conn.execute(f"TRUNCATE {schema}.jobs, {schema}.workers RESTART IDENTITY")
            self.worker_ids = [0] * SLOTS
            self.last_beat: list[datetime] = [clock()] * SLOTS
            for slot in range(SLOTS):
                self._register(slot)
            self.crashed: set[int] = set()  # slots whose worker stopped heartbeating
            self.held: list[dict[int, int]] = [{} for _ in range(SLOTS)]  # slot -> {job: attempt}
            self.zombies: list[tuple[int, int, int]] = []  # (job, attempt, worker id) of swept workers
            self.enqueued = 0
            self.pruned: set[int] = set()
            self.snapshot: dict[int, tuple[str, int, int | None, datetime, datetime | None]] = {}
            self.released: set[int] = set()
            self.last_maintain: tuple[datetime, datetime] | None = None  # clock before and after

        def _register(self, slot: int) -> None:
            row = conn.execute(
                sql["register_worker"], {"hostname": "model", "pid": 0, "queues": ["default"], "concurrency": 1}
            ).fetchone()
            self.worker_ids[slot] = int(row[0])
            (self.last_beat[slot],) = conn.execute(
                f"SELECT last_seen FROM {schema}.workers WHERE id = %s", (row[0],)
            ).fetchone()

        @rule(seconds=st.sampled_from([1.0, 4.0, 12.0, 31.0, 70.0, 200.0]))
        def advance_clock(self, seconds: float) -> None:
            self.offset += seconds
            for session in (conn, maint_conn):
                session.execute("SELECT set_config('currant.clock_offset', %s, false)", (f"{self.offset} seconds",))
            STATS["clock advances"] += 1

        @rule(n=st.integers(1, 3), delay=st.sampled_from([0.0, 0.0, 5.0, 40.0]))
        def enqueue(self, n: int, delay: float) -> None:
            for _ in range(n):
                before = clock()
                conn.execute(
                    sql["enqueue_one"],
                    {
                        "queue": "default",
                        "task": "noop",
                        "payload": PAYLOAD,
                        "priority": 0,
                        "max_attempts": 3,
                        "run_at": None,
                        "delay": delay,
                        "unique_key": None,
                        "waiting": False,
                        "limit_key": None,
                        "channel": app.channel,
                    },
                )
                self.enqueued += 1
                state, run_at = conn.execute(
                    f"SELECT state::text, run_at FROM {schema}.jobs WHERE id = %s", (self.enqueued,)
                ).fetchone()
                # The delay is counted on the database clock.
                assert before + timedelta(seconds=delay) <= run_at <= clock() + timedelta(seconds=delay)
                assert state == ("scheduled" if delay else "queued")

        @rule(slot=st.integers(0, SLOTS - 1), n=st.integers(1, 4))
        def claim(self, slot: int, n: int) -> None:
            if slot in self.crashed:
                return
            rows = conn.execute(
                sql["claim"], {"queue": "default", "limit": n, "worker": self.worker_ids[slot]}
            ).fetchall()
            after = clock()
            for job_id, attempt, *_rest in rows:
                before = self.snapshot.get(job_id)
                assert before is not None and before[0] in ("queued", "scheduled", "retrying"), (job_id, before)
                assert attempt == before[1] + 1
                (run_at,) = conn.execute(f"SELECT run_at FROM {schema}.jobs WHERE id = %s", (job_id,)).fetchone()
                assert run_at <= after, ("a job ran before its time", job_id, run_at, after)
                self.held[slot][job_id] = attempt

        @rule(slot=st.integers(0, SLOTS - 1))
        def claim_suspect(self, slot: int) -> None:
            # A rescued job is claimed alone, by a worker holding nothing else.
            if slot in self.crashed or self.held[slot]:
                return
            rows = conn.execute(sql["claim_suspect"], {"queue": "default", "worker": self.worker_ids[slot]}).fetchall()
            assert len(rows) <= 1
            for job_id, attempt, *_ in rows:
                before = self.snapshot.get(job_id)
                assert before is not None and before[0] == "queued", (job_id, before)
                self.held[slot][job_id] = attempt
                STATS["suspects run"] += 1

        def _finish(self, slot: int, pick: int, kind: str | None, delay: float = 0.0) -> None:
            if not self.held[slot]:
                return
            job_id = sorted(self.held[slot])[pick % len(self.held[slot])]
            attempt = self.held[slot].pop(job_id)
            ids, attempts = id_arrays([(job_id, attempt)])
            worker = self.worker_ids[slot]
            before = clock()
            if kind is None:
                cur = conn.execute(sql["complete_succeeded"], {"ids": ids, "attempt": attempt, "worker": worker})
                assert cur.fetchall() == [(1, None)], "a live lease completes"
            else:
                rows = conn.execute(
                    sql["complete_outcomes"],
                    {
                        "ids": ids,
                        "attempts": attempts,
                        "kinds": [kind],
                        "results": [None],
                        "errors": ["E: x"],
                        "tracebacks": [None],
                        "delays": [delay],
                        "max_attempts": [3],
                        "worker": worker,
                    },
                ).fetchall()
                assert len(rows) == 1
                _id, state, _queue, run_at, *_rest = rows[0]
                if state == "retrying":
                    # The backoff is counted on the database clock too.
                    assert before + timedelta(seconds=delay) <= run_at <= clock() + timedelta(seconds=delay)

        @rule(slot=st.integers(0, SLOTS - 1), pick=st.integers(0, 10))
        def complete(self, slot: int, pick: int) -> None:
            self._finish(slot, pick, None)

        @rule(
            slot=st.integers(0, SLOTS - 1),
            pick=st.integers(0, 10),
            kind=st.sampled_from(["r", "f", "s", "c"]),
            delay=st.sampled_from([0.0, 5.0, 40.0]),
        )
        def fail(self, slot: int, pick: int, kind: str, delay: float) -> None:
            self._finish(slot, pick, kind, delay)

        @rule(slot=st.integers(0, SLOTS - 1))
        def release(self, slot: int) -> None:
            if not self.held[slot]:
                return
            ids, attempts = id_arrays(sorted(self.held[slot].items()))
            rows = conn.execute(
                sql["release"], {"ids": ids, "attempts": attempts, "worker": self.worker_ids[slot]}
            ).fetchall()
            assert len(rows) == len(self.held[slot])
            self.released |= set(self.held[slot])
            self.held[slot].clear()

        @rule(slot=st.integers(0, SLOTS - 1))
        def crash(self, slot: int) -> None:
            # The worker stops: no more heartbeats or claims. Whether its
            # lease ends is up to the clock and the sweep.
            self.crashed.add(slot)

        @rule(slot=st.integers(0, SLOTS - 1))
        def heartbeat(self, slot: int) -> None:
            if slot not in self.crashed:
                self._maintain(self.worker_ids[slot], slot)

        @rule(seconds=st.sampled_from([0.0, 5.0, 31.0, 70.0, 200.0]))
        def sweep(self, seconds: float) -> None:
            # Time passes with the running workers heartbeating every 15 s
            # (advance_clock alone is a stall: nobody beats), then a
            # maintenance round by a process that is not a registered worker.
            while seconds > 0:
                self.advance_clock(min(seconds, 15.0))
                seconds -= 15.0
                for slot in range(SLOTS):
                    self.heartbeat(slot)
            self._maintain(0, None)

        def _maintain(self, worker: int, slot: int | None) -> None:
            before = clock()
            row = maint_conn.execute(
                sql["maintain"],
                {
                    "worker": worker,
                    "queues": ["default"],
                    "running": [],
                    "dead_after": DEAD_AFTER,
                    "max_rescues": 3,
                    "keep_succeeded": KEEP_SUCCEEDED,
                    "keep_failed": KEEP_FAILED,
                    "prune_batch": 1000,
                    "channel": app.channel,
                    **NO_ACTIVITY,
                },
            ).fetchone()
            after = clock()
            self.last_maintain = (before, after)
            live = {wid: seen for wid, seen in conn.execute(f"SELECT id, last_seen FROM {schema}.workers").fetchall()}
            if slot is not None:
                assert self.worker_ids[slot] in live, "a worker that heartbeats is never swept"
                self.last_beat[slot] = live[self.worker_ids[slot]]
            # Whoever calls maintain holds the sweep lock (one connection per
            # schema here), so the sweep is exact up to MARGIN.
            guard_passed = older_than(before, server_start, DEAD_AFTER)
            for other in range(SLOTS):
                silent_before = older_than(before, self.last_beat[other], DEAD_AFTER)
                silent_after = older_than(after + MARGIN, self.last_beat[other], DEAD_AFTER)
                if self.worker_ids[other] in live:
                    assert not (silent_before and guard_passed), ("a silent worker was not swept", other)
                    continue
                assert silent_after, ("a worker was swept within its lease", other, self.last_beat[other], after)
                # Its jobs were rescued: whatever it still reports is a zombie's.
                STATS["workers swept"] += 1
                zombies = [(job, attempt, self.worker_ids[other]) for job, attempt in self.held[other].items()]
                for zombie in zombies:
                    self._zombie_completes(*zombie)
                self.zombies.extend(zombies)
                self.held[other].clear()
                self.crashed.discard(other)
                self._register(other)  # the slot's process starts again
            late = conn.execute(
                f"SELECT id FROM {schema}.jobs WHERE state IN ('scheduled', 'retrying') AND run_at <= %s", (before,)
            ).fetchall()
            assert not late, ("due jobs were not promoted", late)
            kept = conn.execute(
                f"SELECT id FROM {schema}.jobs WHERE (state = 'succeeded' AND finished_at < %s)"
                f" OR (state IN ('failed', 'cancelled') AND finished_at < %s)",
                (before - timedelta(seconds=KEEP_SUCCEEDED), before - timedelta(seconds=KEEP_FAILED)),
            ).fetchall()
            assert not kept, ("finished jobs outlived their retention", kept)
            STATS["promoted"] += row[1]
            STATS["pruned"] += row[4]

        @rule(pick=st.integers(0, 50))
        def zombie_completes(self, pick: int) -> None:
            if not self.zombies:
                return
            self._zombie_completes(*self.zombies[pick % len(self.zombies)])

        def _zombie_completes(self, job_id: int, attempt: int, worker: int) -> None:
            cur = conn.execute(
                sql["complete_succeeded"], {"ids": int8_array([job_id]), "attempt": attempt, "worker": worker}
            )
            assert cur.fetchall() == [(0, [])], "a swept worker's completion is fenced off"
            STATS["zombie fences"] += 1

        @rule(pick=st.integers(0, 50))
        def cancel(self, pick: int) -> None:
            if self.enqueued and pick % 4 == 0:  # rarer than the rest: a cancelled job is done with
                conn.execute(sql["cancel"], {"id": pick % self.enqueued + 1, "channel": app.channel})

        @invariant()
        def consistent(self) -> None:
            rows = conn.execute(
                f"SELECT id, state::text, attempts, worker_id, run_at, finished_at FROM {schema}.jobs"
            ).fetchall()
            live_workers = {row[0] for row in conn.execute(f"SELECT id FROM {schema}.workers").fetchall()}
            now = {
                job_id: (state, attempts, worker, run_at, finished_at)
                for job_id, state, attempts, worker, run_at, finished_at in rows
            }
            for job_id in set(self.snapshot) - set(now):
                # Only retention deletes a job: finished, and past its keep time
                # at the last maintenance.
                state, _attempts, _worker, _run_at, finished_at = self.snapshot[job_id]
                assert state in FINISHED and self.last_maintain is not None, ("a job disappeared", job_id, state)
                keep = KEEP_SUCCEEDED if state == "succeeded" else KEEP_FAILED
                assert older_than(self.last_maintain[1] + MARGIN, finished_at, keep), ("pruned too early", job_id)
                self.pruned.add(job_id)
            assert len(now) + len(self.pruned) == self.enqueued, "no job appears or disappears unaccounted"
            held = {
                job: (self.worker_ids[slot], attempt)
                for slot in range(SLOTS)
                for job, attempt in self.held[slot].items()
            }
            for job_id, (state, attempts, worker, _run_at, _finished_at) in now.items():
                before = self.snapshot.get(job_id)
                if state == "running":
                    assert worker is not None and worker in live_workers, ("running without a live owner", job_id)
                    assert held.get(job_id) == (worker, attempts), ("running but not held", job_id, held.get(job_id))
                elif state in ("queued", "scheduled", "retrying"):
                    assert worker is None, ("waiting job keeps an owner", job_id)
                if before is None:
                    assert state in ("queued", "scheduled") and attempts == 0
                    continue
                old_state, old_attempts = before[0], before[1]
                if old_state in FINISHED:
                    assert state == old_state, ("a finished job moved", job_id, old_state, state)
                if state != old_state:
                    assert (old_state, state) in LEGAL or (old_state, state) == ("running", "running"), (
                        job_id,
                        old_state,
                        state,
                    )
                if attempts < old_attempts:
                    assert job_id in self.released and attempts == old_attempts - 1, ("attempts went down", job_id)
            for job_id in held:
                assert now[job_id][0] == "running", ("a held job is not running", job_id, now[job_id])
            STATS["checks"] += 1
            STATS.update(f"state:{state}" for state, *_ in now.values())
            self.snapshot = now
            self.released = set()

    QueueMachine.TestCase.settings = settings(
        max_examples=20,
        stateful_step_count=60,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    QueueMachine.conns = (conn, maint_conn)  # type: ignore[attr-defined]
    return QueueMachine


def test_state_machine_against_the_sql(app: currant.App, database_dsn: str) -> None:
    machine = _machine(database_dsn, app)
    try:
        run_state_machine_as_test(machine, settings=machine.TestCase.settings)
    finally:
        for conn in machine.conns:  # type: ignore[attr-defined]
            conn.close()
    print(dict(STATS))
    assert STATS["checks"] > 300 and STATS["state:running"] > 0 and STATS["clock advances"] > 100


def test_state_machine_time_transitions_scripted(app: currant.App, database_dsn: str) -> None:
    """The time-driven transitions, each at least once, through the machine's own checks:
    a delay and a backoff end, a crashed worker's lease expires (and its late
    completion is fenced), finished jobs outlive their retention."""
    machine_class = _machine(database_dsn, app)
    machine = machine_class()
    before = Counter(STATS)
    try:
        machine.reset()
        machine.enqueue(n=2, delay=40.0)
        machine.enqueue(n=3, delay=0.0)
        machine.consistent()
        machine.claim(slot=0, n=3)
        machine.consistent()
        machine.complete(slot=0, pick=0)
        machine.fail(slot=0, pick=0, kind="r", delay=5.0)
        machine.consistent()
        machine.crash(slot=0)  # still holds one job
        machine.sweep(seconds=45.0)  # past dead_after, the delays and the backoff
        machine.consistent()
        machine.claim(slot=1, n=4)  # the retried and the two delayed jobs
        machine.claim_suspect(slot=2)  # the rescued one, alone
        machine.consistent()
        assert sorted(machine.held[1]) == [1, 2, 4] and list(machine.held[2]) == [5], machine.held
        for _ in range(3):
            machine.complete(slot=1, pick=0)
        machine.complete(slot=2, pick=0)
        machine.consistent()  # as hypothesis does after every step
        machine.sweep(seconds=70.0)  # past keep_succeeded
        machine.consistent()
    finally:
        for conn in machine_class.conns:  # type: ignore[attr-defined]
            conn.close()
    done = Counter(STATS)
    done.subtract(before)
    assert done["workers swept"] == 1 and done["zombie fences"] == 1, done
    assert done["promoted"] >= 3, done  # two delays ended, one backoff
    assert done["pruned"] == 5, done  # every job succeeded and was kept 60 s
    assert machine.pruned == {1, 2, 3, 4, 5}
