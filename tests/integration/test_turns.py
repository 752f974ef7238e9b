"""Hosts take turns at "jobs ready" (issue 17, item 3; currant/worker/turns.py).

One NOTIFY reaches every LISTENing host; within a host the supervisor already
wakes one process. Across hosts (lone workers here, each with its own LISTEN,
or supervisors of --processes), each host holds a slot and the n-th "jobs
ready" after a membership announcement is one host's turn, so at low load a
job costs about one claim however many hosts idle; a host that dies frees its
slot with its connection, and the others notice, announce, and claim what its
missed turns left.

The test itself LISTENs on the app's channel to see the announcements
("h:<slots>"), as any host would.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import currant
from tests.conftest import state_counts, wait_for
from tests.faults.proxy import TcpProxy

# No fallback poll and no heartbeat inside a test's few seconds: every claim
# counted is one a wake-up caused, and a job found promptly was found by one.
QUIET = ("--poll-interval", "30", "--heartbeat", "10", "--dead-after", "60")


def _claims(log: str) -> tuple[int, int]:
    """(claims, empty claims) of one worker, from its exit line."""
    found = re.findall(r"jobs/s, (\d+) claims, (\d+) empty\)", log)
    assert found, log[-2000:]
    return sum(int(claims) for claims, _ in found), sum(int(empty) for _, empty in found)


def _held(db: Any, schema: str) -> list[int]:
    (slots,) = db.execute(f'SELECT "{schema}".host_slots()').fetchone()
    return list(slots)


class Announcements:
    """The channel's "h:" payloads, as a host sees them."""

    def __init__(self, dsn: str, channel: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(f'LISTEN "{channel}"')
        self.seen: list[list[int]] = []

    def latest(self) -> list[int] | None:
        for notify in self.conn.notifies(timeout=0):
            if notify.payload.startswith("h:"):
                rest = notify.payload[2:]
                self.seen.append(sorted(int(each) for each in rest.split(",")) if rest else [])
        return self.seen[-1] if self.seen else None


@pytest.fixture
def announcements(app: currant.App, database_dsn: str) -> Iterator[Announcements]:
    watcher = Announcements(database_dsn, app.channel)
    yield watcher
    watcher.conn.close()


def _settled(db: Any, app: currant.App, watcher: Announcements, hosts: int) -> list[int]:
    """Wait until ``hosts`` slots are held and the last announcement names them all
    (every later "jobs ready" is then counted alike by every host)."""
    wait_for(lambda: len(_held(db, app.schema)) == hosts, timeout=30, message=f"{hosts} hosts joined")
    held = _held(db, app.schema)
    wait_for(lambda: watcher.latest() == held, timeout=10, message=f"an announcement of {held}")
    return held


def _one_at_a_time(app: currant.App, jobs: int, within: float, queue: str | None = None) -> float:
    """Enqueue ``jobs`` jobs one after the other, each waited for; returns the longest wait."""
    longest = 0.0
    for n in range(jobs):
        started = time.monotonic()
        job_id = app.enqueue("add", (n, 1), queue=queue)
        wait_for(lambda: app.get_job(job_id).state == "succeeded", timeout=within, message=f"job {n} done")  # type: ignore[union-attr]
        longest = max(longest, time.monotonic() - started)
    return longest


def _stop(workers: list[Any]) -> tuple[int, int]:
    for worker in workers:
        worker.signal(signal.SIGTERM)
    claims = empty = 0
    for worker in workers:
        assert worker.wait(30) == 0
        more, more_empty = _claims(worker.log())
        claims, empty = claims + more, empty + more_empty
    return claims, empty


def test_one_notify_one_claim_among_four_idle_hosts(
    app: currant.App, spawn_worker: Any, db: Any, announcements: Announcements
) -> None:
    hosts, jobs = 4, 24
    workers = [spawn_worker(*QUIET) for _ in range(hosts)]
    _settled(db, app, announcements, hosts)
    _one_at_a_time(app, jobs, within=10)
    claims, empty = _stop(workers)
    print(f"\n{hosts} idle lone workers, {jobs} jobs one at a time: {claims} claims, {empty} empty")
    assert claims - empty == jobs
    # Each worker claims once at start and once when LISTEN comes up; past
    # those a job costs one claim (every host woken: 4 per job, 72 empty).
    assert empty <= 2 * hosts + jobs // 4, (claims, empty)
    # Each took its turns: the jobs went round.
    (ran_on,) = db.execute(f'SELECT count(DISTINCT worker_id) FROM "{app.schema}".jobs').fetchone()
    assert ran_on == hosts


def _listener_statements(db: Any, schema: str) -> dict[int, Any]:
    """The hosts' LISTEN connections (they hold the slots): pid -> when each
    started its last statement (it changes with every statement)."""
    rows = db.execute(
        "SELECT a.pid, a.query_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted"
        " AND l.classid = hashtext('currant.hosts:' || %s)::oid",
        (f'"{schema}"',),
    ).fetchall()
    return dict(rows)


def _quiet_for(db: Any, schema: str, seconds: float) -> None:
    """The LISTEN connections run no statement for ``seconds``: longer than
    two slot checks (CHECK_EVERY) and shorter than QUIET's health check. What
    is asserted is an absence, so the wait runs out its deadline."""
    # First each host finishes with the last announcement: it reads the
    # members' queues and LISTENs again a few milliseconds after seeing it.
    last, since = _listener_statements(db, schema), time.monotonic()

    def settled() -> bool:
        nonlocal last, since
        now = _listener_statements(db, schema)
        if now != last:
            last, since = now, time.monotonic()
        return time.monotonic() - since >= 0.5

    wait_for(settled, timeout=10, message="the LISTEN connections settled")
    before = last
    # The wait is for the statement that must not come: it passes by timing out.
    with pytest.raises(AssertionError, match="timed out"):
        wait_for(lambda: _listener_statements(db, schema) != before, timeout=seconds, message="a LISTEN statement")


def test_a_lone_host_does_not_check_the_slots_until_another_joins(
    app: currant.App, spawn_worker: Any, db: Any, announcements: Announcements
) -> None:
    """The slots check looks for other members that died: a host alone has
    none, and an idle lone worker sends no statement for it (idle workers
    cost the database one statement per poll interval, BENCHMARKS.md). With a
    second host it checks again, and finds that host gone when it is killed."""
    from currant.worker.wakeup import CHECK_EVERY

    first = spawn_worker(*QUIET)
    (alone,) = _settled(db, app, announcements, 1)
    _quiet_for(db, app.schema, 2.5 * CHECK_EVERY)
    second = spawn_worker(*QUIET)
    _settled(db, app, announcements, 2)
    second.kill()
    # Only the survivor's check can find out: the dead host told nobody.
    wait_for(lambda: announcements.latest() == [alone], timeout=5 * CHECK_EVERY, message="the survivor announced")
    _quiet_for(db, app.schema, 2.5 * CHECK_EVERY)
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0


def test_supervised_hosts_take_turns_too(
    app: currant.App, spawn_worker: Any, db: Any, announcements: Announcements
) -> None:
    """Two supervisors of two processes each: the supervisor holds the host's
    slot, and a host's turn still wakes one of its processes."""
    jobs = 16
    workers = [spawn_worker("--processes", "2", *QUIET) for _ in range(2)]
    _settled(db, app, announcements, 2)
    wait_for(
        lambda: db.execute(f'SELECT count(*) FROM "{app.schema}".workers').fetchone()[0] == 4,
        message="every process registered",
    )
    _one_at_a_time(app, jobs, within=10)
    claims, empty = _stop(workers)
    print(f"\n2 hosts of 2 processes, {jobs} jobs one at a time: {claims} claims, {empty} empty")
    assert claims - empty == jobs
    assert empty <= 2 * 4 + jobs // 4, (claims, empty)


def test_a_killed_host_leaves_the_turns(
    app: currant.App, spawn_worker: Any, db: Any, announcements: Announcements
) -> None:
    """SIGKILL: the host's connection closes, its slot frees, a survivor
    announces within a couple of seconds and claims what the dead host's turns
    left. No job waits for the (30 s) poll, none is lost, and afterwards a job
    costs about one claim again."""
    hosts = 3
    workers = [spawn_worker(*QUIET) for _ in range(hosts)]
    held = _settled(db, app, announcements, hosts)
    victim = workers.pop(1)
    victim.kill()
    # Jobs enqueued before anyone noticed: some are the dead host's turns.
    longest = _one_at_a_time(app, 6, within=10)
    assert longest < 6, f"a job waited {longest:.1f} s after the kill"
    survivors = _settled(db, app, announcements, hosts - 1)
    assert len(survivors) == hosts - 1 and set(survivors) < set(held)
    jobs = 12
    _one_at_a_time(app, jobs, within=10)
    claims, empty = _stop(workers)
    print(f"\n{hosts} hosts, one killed: {claims} claims, {empty} empty, for {6 + jobs} jobs")
    assert claims - empty == 6 + jobs
    # Start-up (2 each), the kill's few (up to 6 jobs that went round before
    # the kill was noticed, and the claim for the dead host's turns), then
    # about one claim per job.
    assert empty <= 2 * (hosts - 1) + 6 + 2 + jobs // 4, (claims, empty)


def test_a_queue_only_one_host_serves_is_its_turn_every_time(
    app: currant.App, spawn_worker: Any, db: Any, announcements: Announcements
) -> None:
    """Turns are counted per queue among the hosts serving it: a job of a
    queue only one host serves is that host's every time, picked up at once
    (the poll is 30 s away), and the other queue's jobs still go round."""
    workers = [spawn_worker("--queues", "default", *QUIET) for _ in range(2)]
    workers.append(spawn_worker("--queues", "other", *QUIET))
    _settled(db, app, announcements, 3)
    for _ in range(3):  # interleaved: turns of one queue do not move the other's
        assert _one_at_a_time(app, 2, within=5, queue="other") < 2
        assert _one_at_a_time(app, 2, within=5) < 2
    claims, empty = _stop(workers)
    assert claims - empty == 12
    assert empty <= 2 * 3 + 3, (claims, empty)


@pytest.mark.parametrize("processes", [1, 2], ids=["lone", "supervised"])
def test_a_full_claim_wakes_the_next_host(
    app: currant.App, spawn_worker: Any, db: Any, announcements: Announcements, processes: int
) -> None:
    """One NOTIFY for 2,000 jobs is one host's turn; its full batch NOTIFYs
    again (the next host's turn), and so on: every host works, long before any
    poll or heartbeat. Under a supervisor the full batch also wakes the next
    child, as before."""
    hosts = 2
    extra = ("--processes", str(processes)) if processes > 1 else ()
    workers = [spawn_worker(*extra, "--batch-size", "50", *QUIET) for _ in range(hosts)]
    _settled(db, app, announcements, hosts)
    wait_for(
        lambda: db.execute(f'SELECT count(*) FROM "{app.schema}".workers').fetchone()[0] == hosts * processes,
        message="every process registered",
    )
    app.enqueue_many("noop", [()] * 2000)
    wait_for(
        lambda: state_counts(db, app.schema) == {"succeeded": 2000}, timeout=9, message="drained before a heartbeat"
    )
    (ran_on,) = db.execute(f'SELECT count(DISTINCT worker_id) FROM "{app.schema}".jobs').fetchone()
    _stop(workers)
    assert ran_on == hosts * processes


def test_a_half_open_host_ends_its_old_session_when_it_rejoins(
    app: currant.App, spawn_worker: Any, db: Any, announcements: Announcements, database_dsn: str
) -> None:
    """A host whose connections stop answering without closing (a proxy that
    blackholes them: TCP keepalives are answered, so the server never notices).
    Its listener's check gets no answer within --db-timeout; it reconnects,
    rejoins, and ends its old session, whose slot would otherwise take turns
    for ever. The turns that went to the old slot meanwhile are claimed when
    the others see it leave: no job waits for the (30 s) poll."""
    params = conninfo_to_dict(database_dsn)
    proxy = TcpProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    try:
        spawn_worker(*QUIET)
        held = _settled(db, app, announcements, 1)
        via = make_conninfo(**{**params, "host": "127.0.0.1", "port": str(proxy.port)})
        spawn_worker(*QUIET, "--db-timeout", "3", env={"CURRANT_DSN": via})
        held = _settled(db, app, announcements, 2)
        (pids,) = db.execute(
            f'SELECT array_agg(pid) FROM "{app.schema}".hosts WHERE slot = ANY(%s)', (held,)
        ).fetchone()
        proxy.blackhole()
        longest = _one_at_a_time(app, 4, within=20)

        def old_session_ended() -> bool:
            alive = db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchone()[0]
            return bool(alive == 1 and len(_held(db, app.schema)) == 2)

        wait_for(old_session_ended, timeout=20, message="the half-open session ended and the host rejoined")
        _settled(db, app, announcements, 2)
        assert longest < 12, f"a job waited {longest:.1f} s"
    finally:
        proxy.close()


def test_without_the_hosts_functions_every_host_acts_as_before(app: currant.App, spawn_worker: Any, db: Any) -> None:
    """A host that cannot join (here the functions are gone; in life, a
    supervisor that started before its children migrated the schema) claims
    on every notification, as before turns: more claims, no job left waiting."""
    db.execute(f'DROP FUNCTION "{app.schema}".host_join(text[], integer, timestamptz)')
    hosts, jobs = 2, 6
    workers = [spawn_worker(*QUIET) for _ in range(hosts)]
    for worker in workers:
        wait_for(lambda w=worker: "not taking turns" in w.log(), message="the worker gave up joining")
    assert _one_at_a_time(app, jobs, within=5) < 2
    claims, empty = _stop(workers)
    assert claims - empty == jobs
    assert empty >= jobs  # every host woke for every job


def test_notifications_that_arrive_during_a_query_are_kept(database_dsn: str) -> None:
    """What turns rely on from psycopg: the Listener leaves notifies() to run
    its statements (the slots check, the health check), and every host must
    still see every notification, in order, or the hosts' counts part ways.
    psycopg keeps those that arrive meanwhile for the next notifies() since
    3.2.4 (psycopg issue 962; pyproject.toml asks for it)."""
    import asyncio

    async def scenario() -> list[str]:
        async with await psycopg.AsyncConnection.connect(database_dsn, autocommit=True) as listener:
            await listener.execute('LISTEN "currant_test_backlog"')
            async with await psycopg.AsyncConnection.connect(database_dsn, autocommit=True) as sender:
                await sender.execute("SELECT pg_notify('currant_test_backlog', 'before')")
                seen = [n.payload async for n in listener.notifies(timeout=5, stop_after=1)]
                query = asyncio.ensure_future(listener.execute("SELECT pg_sleep(0.3)"))
                for n in range(3):  # while the listener's query runs
                    await sender.execute("SELECT pg_notify('currant_test_backlog', %s)", (f"during-{n}",))
                await query
                await sender.execute("SELECT pg_notify('currant_test_backlog', 'after')")
            async for notify in listener.notifies(timeout=5):
                seen.append(notify.payload)
                if notify.payload == "after":
                    break
            return seen

    assert asyncio.run(scenario()) == ["before", "during-0", "during-1", "during-2", "after"]
