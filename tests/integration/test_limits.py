"""Rate and concurrency limits (issue 15): held across worker processes, by the database."""

from __future__ import annotations

import inspect
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import currant
from currant.limits import make_limit, parse_rate
from tests.apps.limited import register
from tests.conftest import state_counts, wait_for

APP = "tests.apps.limited:app"


@pytest.fixture
def limited_app(app: currant.App) -> currant.App:
    register(app)
    return app


@contextmanager
def sampling(database_dsn: str, query: str, params: tuple[Any, ...]) -> Iterator[list[Any]]:
    """Run ``query`` over and over on a connection of its own while the block runs; the answers."""
    seen: list[Any] = []
    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            while not done.is_set():
                seen.append(conn.execute(query, params).fetchone())

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()


def _all_succeeded(db: psycopg.Connection[Any], schema: str, total: int) -> bool:
    return state_counts(db, schema).get("succeeded", 0) == total


def test_max_running_holds_across_four_workers_of_sixteen_lanes(
    limited_app: currant.App, db: Any, database_dsn: str, schema_name: str, spawn_worker: Any
) -> None:
    limited_app.enqueue_many("limited.slow", [()] * 120)
    query = f"SELECT count(*) FROM \"{schema_name}\".jobs WHERE state = 'running' AND task = %s"
    with sampling(database_dsn, query, ("limited.slow",)) as seen:
        workers = [spawn_worker("--concurrency", "16", "--poll-interval", "0.2", app=APP) for _ in range(4)]
        wait_for(lambda: _all_succeeded(db, schema_name, 120), timeout=120, message="120 limited jobs done")
    for worker in workers:
        worker.kill()
    running = [row[0] for row in seen]
    assert len(running) > 50, "the sampler saw the drain"
    assert max(running) == 3, max(running)  # never more, and the limit is used


def test_a_rate_limit_holds_over_every_ten_second_window(
    limited_app: currant.App, db: Any, schema_name: str, spawn_worker: Any
) -> None:
    limited_app.enqueue_many("limited.paced", [()] * 700)
    workers = [spawn_worker("--concurrency", "16", app=APP) for _ in range(4)]
    wait_for(lambda: _all_succeeded(db, schema_name, 700), timeout=120, message="700 paced jobs done")
    for worker in workers:
        worker.kill()
    starts = [
        row[0].timestamp()
        for row in db.execute(f'SELECT started_at FROM "{schema_name}".jobs ORDER BY started_at').fetchall()
    ]
    first, last = starts[0], starts[-1]
    assert last - first > 12, "the jobs ran over more than 12 s: 700 at 50/s"
    windows = []
    t = first
    while t + 10 <= last:
        windows.append(sum(1 for s in starts if t <= s < t + 10))
        t += 0.25
    assert windows and min(windows) >= 450 and max(windows) <= 550, (min(windows), max(windows))


def test_per_key_limits_are_independent(
    limited_app: currant.App, db: Any, database_dsn: str, schema_name: str, spawn_worker: Any
) -> None:
    limited_app.enqueue_many(
        "limited.per_customer", [("acme", n) for n in range(10)] + [("initech", n) for n in range(10)]
    )
    assert dict(db.execute(f'SELECT limit_key, count(*) FROM "{schema_name}".jobs GROUP BY 1').fetchall()) == {
        "acme": 10,
        "initech": 10,
    }
    query = (
        f"SELECT count(*) FILTER (WHERE limit_key = 'acme'), count(*) FILTER (WHERE limit_key = 'initech')"
        f" FROM \"{schema_name}\".jobs WHERE state = 'running'"
    )
    with sampling(database_dsn, query, ()) as seen:
        workers = [spawn_worker("--concurrency", "8", app=APP) for _ in range(2)]
        wait_for(lambda: _all_succeeded(db, schema_name, 20), timeout=60, message="20 jobs done")
    for worker in workers:
        worker.kill()
    assert max(a for a, _ in seen) == 1 and max(b for _, b in seen) == 1
    assert any(a == b == 1 for a, b in seen), "the two keys ran side by side"


def test_a_held_back_job_is_not_claimed_early_and_not_spun_on(
    limited_app: currant.App, db: Any, database_dsn: str, schema_name: str, spawn_worker: Any
) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(database_dsn)["dbname"]
    db.execute(f"ALTER DATABASE \"{dbname}\" SET track_functions = 'pl'")
    limited_app.enqueue_many("limited.slowly_paced", [()] * 8)
    worker = spawn_worker("--burst", "--poll-interval", "1", app=APP)
    assert worker.wait(60) == 0, worker.log()
    starts = [
        row[0] for row in db.execute(f'SELECT started_at FROM "{schema_name}".jobs ORDER BY started_at').fetchall()
    ]
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) > 0.45, gaps  # 2/s: a token every 0.5 s, and a bucket of one
    db.execute("SELECT pg_stat_clear_snapshot()")
    (calls,) = db.execute(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE schemaname = %s AND funcname = 'claim_limited'",
        (schema_name,),
    ).fetchone()
    # One call per token (8) and per poll or wake-up around them: not a spin.
    assert 8 <= calls <= 30, calls


def test_a_held_back_key_does_not_hold_back_other_jobs(
    limited_app: currant.App, db: Any, schema_name: str, spawn_worker: Any
) -> None:
    first, second = limited_app.enqueue_many("limited.hourly", [(), ()])
    free = limited_app.enqueue_many("limited.free", [()] * 5)
    spawn_worker(app=APP)
    wait_for(
        lambda: all(limited_app.get_job(i).state == "succeeded" for i in [first, *free]),
        timeout=30,
        message="the first hourly job and the free ones",
    )
    later = limited_app.enqueue("limited.free")
    wait_for(lambda: limited_app.get_job(later).state == "succeeded", timeout=30, message="a job enqueued later")
    assert limited_app.get_job(second).state == "queued"  # its token comes in an hour


def test_jobs_from_a_producer_that_does_not_know_the_limit_are_held_to_it(
    app: currant.App, db: Any, schema_name: str, spawn_worker: Any
) -> None:
    app.enqueue_many("limited.per_customer", [(("acme",), {"n": n}) for n in range(6)])  # by name: no key
    worker = spawn_worker("--concurrency", "8", "--burst", app=APP)
    assert worker.wait(60) == 0, worker.log()
    rows = db.execute(
        f'SELECT state::text, attempts, limit_key, started_at, finished_at FROM "{schema_name}".jobs ORDER BY started_at'
    ).fetchall()
    assert len(rows) == 6 and all(row[:3] == ("succeeded", 1, "acme") for row in rows), rows
    # max_running=1: each ran after the one before it finished (the first claim only handed them back).
    # Both stamps are their statement's start (clock() is now()): a claim that began a moment before the
    # previous completion committed, and counted the running jobs after it, stamps the earlier time. Two
    # runs at once would overlap by most of the handler's 100 ms; 60 ms is the statements' slack.
    slack = timedelta(milliseconds=60)
    assert all(later[3] >= earlier[4] - slack for earlier, later in zip(rows, rows[1:], strict=False)), rows
    assert "handed to their limits" in worker.log()


def test_limit_key_at_enqueue(limited_app: currant.App, db: Any, schema_name: str) -> None:
    job = limited_app.enqueue("limited.per_customer", ("acme",), limit_key="vip")
    many = limited_app.enqueue_many("limited.slow", [()] * 3, limit_key="night")
    keys = dict(db.execute(f'SELECT id, limit_key FROM "{schema_name}".jobs').fetchall())
    assert keys[job] == "vip" and [keys[i] for i in many] == ["night"] * 3
    with pytest.raises(ValueError, match="'limited.free' has no rate_limit or max_running"):
        limited_app.enqueue("limited.free", limit_key="x")
    with pytest.raises(TypeError, match="item 1: task 'limited.per_customer': limit_key 'customer'"):
        limited_app.enqueue_many("limited.per_customer", [("a",), ()])
    assert len(keys) == 4  # the refused ones inserted nothing


@pytest.mark.parametrize(
    ("text", "per_second"), [("100/s", 100.0), ("10/m", 10 / 60), ("1000/h", 1000 / 3600), (" 2.5 / sec ", 2.5)]
)
def test_rates_parse(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["100", "100/d", "/s", "-1/s", "0/s", "0.5/h", 100])
def test_bad_rates_are_refused(text: Any) -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        parse_rate(text)


def test_bad_declarations_are_refused(app: currant.App) -> None:
    def send(customer: str) -> None: ...

    with pytest.raises(ValueError, match="limit_key 'tenant' is not one of its arguments"):
        make_limit("t", inspect.signature(send), "1/s", None, "tenant")
    with pytest.raises(ValueError, match="limit_key needs a rate_limit or a max_running"):
        make_limit("t", inspect.signature(send), None, None, "customer")
    with pytest.raises(ValueError, match="max_running must be at least 1"):
        app.task(name="t0", max_running=0)(send)
    with pytest.raises(TypeError, match="max_running must be an int"):
        app.task(name="t1", max_running="3")(send)
    limit = make_limit("t", inspect.signature(send), "10/s", 2, lambda customer: customer.upper())
    assert limit is not None and limit.key_for(("acme",), None) == "ACME" and limit.burst == 1.0


def test_a_plain_job_does_not_wait_for_the_limited_claim_of_its_round(
    limited_app: currant.App, db: psycopg.Connection[Any], database_dsn: str, spawn_worker: Any
) -> None:
    """With limited tasks declared, each claim round also runs claim_limited;
    the plain jobs the round's first claim took run without waiting for it
    (here it waits on a bucket row a transaction holds)."""
    app, schema = limited_app, limited_app.schema
    capped = app.enqueue("limited.slow")
    (key,) = db.execute(f'SELECT limit_key FROM "{schema}".jobs WHERE id = %s', (capped,)).fetchone()  # type: ignore[misc]
    plain = app.enqueue("limited.free")
    with psycopg.connect(database_dsn) as holder:  # a transaction, open until the block ends
        holder.execute(
            f'INSERT INTO "{schema}".limit_buckets (task, key, tokens, refilled_at) VALUES (%s, %s, 1, now())',
            ("limited.slow", key),
        )
        worker = spawn_worker(app=APP)
        state = f'SELECT state::text FROM "{schema}".jobs WHERE id = %s'
        wait_for(lambda: db.execute(state, (plain,)).fetchone() == ("succeeded",), timeout=20, message="the plain job")
        assert db.execute(state, (capped,)).fetchone() == ("queued",)  # its claim still waits on the bucket
        holder.rollback()
    wait_for(lambda: db.execute(state, (capped,)).fetchone() == ("succeeded",), timeout=20, message="the capped job")
    assert "ERROR" not in worker.log()


def _claim_limited_calls(db: psycopg.Connection[Any], schema: str) -> int:
    db.execute("SELECT pg_stat_clear_snapshot()")
    (calls,) = db.execute(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE schemaname = %s AND funcname = 'claim_limited'",
        (schema,),
    ).fetchone()  # type: ignore[misc]
    return int(calls)


def test_an_idle_worker_of_a_limited_app_polls_with_one_statement(
    limited_app: currant.App, db: psycopg.Connection[Any], database_dsn: str, schema_name: str, spawn_worker: Any
) -> None:
    """A claim round of an app with limited tasks is two statements (claim and
    claim_limited); its fallback poll asks has_ready first, so an idle worker
    sends one per poll interval, as a plain app's does. And a limited job whose
    notification never came is still found by the poll."""
    dbname = psycopg.conninfo.conninfo_to_dict(database_dsn)["dbname"]
    db.execute(f"ALTER DATABASE \"{dbname}\" SET track_functions = 'pl'")
    # The heartbeat (which reports ready work too) out of the way: what finds the job is the poll.
    worker = spawn_worker("--poll-interval", "0.2", "--heartbeat", "30", "--dead-after", "60", app=APP)
    polls: set[Any] = set()

    def polled_five_times() -> bool:
        # The claims connection's has_ready (the LISTEN connection's comes every 60 s here).
        for (started,) in db.execute(
            "SELECT query_start FROM pg_stat_activity WHERE application_name = 'currant-worker'"
            " AND datname = current_database() AND query LIKE 'SELECT EXISTS (SELECT 1 FROM%%'"
        ).fetchall():
            polls.add(started)
        return len(polls) >= 5

    wait_for(polled_five_times, timeout=20, message="five polls by has_ready")
    # A limited job that wakes nobody (its notification goes to another channel).
    plan = limited_app.enqueue_plan("limited.slow", (), None)
    _fetch, statement, params = next(plan)
    ((job_id, *_),) = db.execute(statement, {**params, "channel": "currant_nobody_listens"}).fetchall()
    state = f'SELECT state::text FROM "{schema_name}".jobs WHERE id = %s'
    wait_for(lambda: db.execute(state, (job_id,)).fetchone() == ("succeeded",), timeout=5, message="the polled job")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()
    # The worker's first rounds (start-up, LISTEN up), the round that found
    # the job and the one after it; none for the idle polls.
    assert _claim_limited_calls(db, schema_name) <= 6
