"""The partitioned archive of succeeded jobs (issue 17, part 4; currant.archive).

What must hold: with the archive on, a success moves to the archive as it
completes, with its result (fenced like every completion), while a job that
others wait for or that belongs to a group stays in jobs; every
reader (get_job, list_jobs, stats, purge, the CLI) sees archived jobs as the
succeeded jobs they are; rotation creates partitions ahead, drops those past
retention (and gives up at once, for the next round, when it cannot get its
lock), prunes the default partition row by row; a running worker follows the
archive being turned on and off.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

import currant
from currant import archive
from currant.codec import encode_result
from currant.flow import Call
from currant.metrics import snapshot
from currant.worker.arrays import int8_array, register_array_dumpers
from tests.conftest import mark_running, run_worker_here, wait_for
from tests.integration.test_admin_cli import admin


def _where(db: psycopg.Connection[Any], schema: str) -> dict[int, str]:
    """Each job's place: 'archive' or its state in jobs."""
    rows = db.execute(
        f'SELECT id, state::text FROM "{schema}".jobs UNION ALL SELECT id, \'archive\' FROM "{schema}".archive'
    ).fetchall()
    return dict(rows)


def _partitions(db: psycopg.Connection[Any], schema: str) -> list[str]:
    rows = db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass ORDER BY 1",
        (f'"{schema}".archive',),
    ).fetchall()
    return [name for (name,) in rows]


def test_plain_successes_move_to_the_archive_and_every_reader_sees_them(
    app: currant.App, db: psycopg.Connection[Any]
) -> None:
    assert app.run_plan(archive.enable(app.sql, 3600), write=True) == archive.AHEAD + 1

    @app.task(name="nothing")
    def nothing(i: int) -> None:
        pass

    @app.task(name="value")
    def value() -> int:
        return 42

    @app.task(name="broken", max_attempts=1)
    def broken() -> None:
        raise RuntimeError("broken on purpose")

    plain = nothing.enqueue_many([(i,) for i in range(200)])
    valued = value.enqueue()
    failure = broken.enqueue()
    parent = nothing.enqueue(-1)
    child = nothing.options(depends_on=[parent]).enqueue(-2)
    members = app.group([nothing.s(-3), nothing.s(-4)]).member_ids
    worker = run_worker_here(app, keep_succeeded=3600.0)
    assert worker.state.tally.summary().startswith("205 succeeded, 1 failed")

    where = _where(db, app.schema)
    assert {where[job_id] for job_id in [*plain, child, valued]} == {"archive"}
    kept = [parent, *members]
    assert {job_id: where[job_id] for job_id in [*kept, failure]} == {
        **dict.fromkeys(kept, "succeeded"),
        failure: "failed",
    }
    assert len(where) == 206  # nothing twice, nothing lost

    job = app.get_job(plain[7])
    assert job is not None and job.state == "succeeded" and job.args == (7,) and job.finished_at is not None
    assert app.get_job(valued).result == 42  # type: ignore[union-attr]
    listed = app.list_jobs("succeeded", task="nothing", limit=500)
    assert {row["id"] for row in listed} == {*plain, parent, child, *members}
    assert [row["id"] for row in listed] == sorted((row["id"] for row in listed), reverse=True)  # newest first
    assert app.stats()["queues"]["default"]["states"]["succeeded"] == 205

    assert app.purge("succeeded", older_than=3600) == 0  # nothing that old
    assert app.purge("succeeded") == 205
    assert _where(db, app.schema) == {failure: "failed"}


def _archive_completion(
    app: currant.App, db: psycopg.Connection[Any], ids: list[int], worker: int, attempt: int = 1
) -> Any:
    register_array_dumpers(db)  # the arrays go as the worker sends them
    results = [encode_result(job_id) for job_id in ids]  # each job's own id as its result
    return db.execute(
        app.sql["complete_succeeded_archiving"],
        {"ids": int8_array(ids), "attempt": attempt, "results": results, "worker": worker},
    ).fetchone()


def test_the_archiving_completion_is_fenced_and_keeps_parents_and_members(
    app: currant.App, db: psycopg.Connection[Any]
) -> None:
    app.run_plan(archive.enable(app.sql, 3600), write=True)
    ids = app.enqueue_many("anything", [()] * 3)
    worker = mark_running(app, db, ids)
    archive_bytes = app.run_plan(snapshot(app.sql, app.schema))["archive_bytes"]  # the metric: empty partitions
    assert tuple(_archive_completion(app, db, ids, worker + 1)) == (0, [])  # another worker's lease
    assert tuple(_archive_completion(app, db, ids, worker, attempt=2)) == (0, [])  # another attempt
    assert _where(db, app.schema) == dict.fromkeys(ids, "running")
    assert tuple(_archive_completion(app, db, ids, worker)) == (3, None)
    assert _where(db, app.schema) == dict.fromkeys(ids, "archive")
    assert [app.get_job(job_id).result for job_id in ids] == ids  # type: ignore[union-attr]
    assert app.run_plan(snapshot(app.sql, app.schema))["archive_bytes"] > archive_bytes
    # Archived as they were, state and finish time set.
    (row,) = db.execute(
        f"SELECT count(*), bool_and(state = 'succeeded' AND finished_at IS NOT NULL AND worker_id = %s) FROM \"{app.schema}\".archive",
        (worker,),
    ).fetchall()
    assert row == (3, True)

    parent = app.enqueue("anything")
    child = app.enqueue("anything", depends_on=[parent])
    member, other = app.group([Call("anything"), Call("anything")]).member_ids
    worker = mark_running(app, db, [parent, member])
    assert tuple(_archive_completion(app, db, [parent, member], worker)) == (2, None)
    # Updated in place: the parent's update released its child, the group counted its member.
    where = _where(db, app.schema)
    assert (where[parent], where[child], where[member], where[other]) == ("succeeded", "queued", "succeeded", "queued")
    assert app.get_job(parent).result == parent  # type: ignore[union-attr]


def _rotate(db: psycopg.Connection[Any], app: currant.App, keep: float | None) -> tuple[int, ...]:
    row = db.execute(app.sql["archive_rotate"], {"keep": keep, "ahead": archive.AHEAD}).fetchone()
    assert row is not None
    return tuple(row)


def test_rotation_creates_ahead_drops_past_retention_and_prunes_the_default(
    app: currant.App, db: psycopg.Connection[Any]
) -> None:
    app.run_plan(archive.enable(app.sql, 60), write=True)
    first = _partitions(db, app.schema)
    assert len(first) == archive.AHEAD + 2 and "archive_default" in first  # now, AHEAD more, the default
    ids = app.enqueue_many("anything", [()] * 5)
    worker = mark_running(app, db, ids)
    _archive_completion(app, db, ids, worker)
    # A row whose range has no partition lands in the default one.
    db.execute(
        f"UPDATE \"{app.schema}\".archive SET finished_at = finished_at - interval '1 day' WHERE id = %s", (ids[0],)
    )
    assert db.execute(f'SELECT id FROM "{app.schema}".archive_default').fetchall() == [(ids[0],)]

    assert _rotate(db, app, keep=3600) == (True, 0, 0, 1)  # the day-old row goes; the rest is kept
    assert _where(db, app.schema) == dict.fromkeys(ids[1:], "archive")
    # Ten minutes later (the schema's test clock), with a minute's retention.
    db.execute(f'SELECT "{app.schema}".use_test_clock(true)')
    db.execute(app.sql["set_clock_offset"], {"seconds": 600})
    enabled, created, dropped, purged = _rotate(db, app, keep=60)
    assert (enabled, created, purged) == (True, archive.AHEAD + 1, 0)
    assert dropped == len(first) - 1  # every partition of ten minutes ago, not the default
    assert _where(db, app.schema) == {}
    assert len(_partitions(db, app.schema)) == archive.AHEAD + 2
    assert app.get_job(ids[1]) is None


def test_a_drop_that_cannot_get_its_lock_waits_for_the_next_round(
    app: currant.App, db: psycopg.Connection[Any], database_dsn: str
) -> None:
    app.run_plan(archive.enable(app.sql, 60), write=True)
    db.execute(f'SELECT "{app.schema}".use_test_clock(true)')
    db.execute(app.sql["set_clock_offset"], {"seconds": 600})
    with psycopg.connect(database_dsn) as reader:  # a long read of the archive (a dashboard page) holds it
        reader.execute(f'SELECT count(*) FROM "{app.schema}".jobs_all')
        assert _rotate(db, app, keep=60)[2] == 0  # no error, no wait past lock_timeout: next round
        assert len(_partitions(db, app.schema)) >= archive.AHEAD + 2
    enabled, created, dropped, purged = _rotate(db, app, keep=60)
    assert dropped == archive.AHEAD + 1 and len(_partitions(db, app.schema)) == archive.AHEAD + 2
    # Turned off: nothing is created, what is there still ages out.
    assert app.run_plan(archive.disable(app.sql), write=True) is True
    db.execute(app.sql["set_clock_offset"], {"seconds": 1800})
    assert _rotate(db, app, keep=60) == (False, 0, archive.AHEAD + 1, 0)
    assert _partitions(db, app.schema) == ["archive_default"]


def test_a_running_worker_follows_the_archive_on_and_off(
    app: currant.App, db: psycopg.Connection[Any], spawn_worker: Any
) -> None:
    worker = spawn_worker("--heartbeat", "0.1")  # a rotation every 12 heartbeats: 1.2 s

    def lands_in(place: str) -> bool:
        job_id = app.enqueue("noop")
        wait_for(lambda: app.get_job(job_id).state == "succeeded", message=f"job {job_id} done")  # type: ignore[union-attr]
        return _where(db, app.schema)[job_id] == place

    assert lands_in("succeeded")
    app.run_plan(archive.enable(app.sql, 3600), write=True)
    wait_for(lambda: lands_in("archive"), message="a job archived", interval=0.2)
    app.run_plan(archive.disable(app.sql), write=True)
    wait_for(lambda: lands_in("succeeded"), message="a job kept in jobs again", interval=0.2)
    worker.signal(15)
    assert worker.wait(60) == 0
    log = worker.log()
    assert "the archive is on: successes move there" in log
    assert "the archive is off: successes stay in jobs" in log


def test_a_worker_started_after_enable_archives_from_its_first_job(
    app: currant.App, db: psycopg.Connection[Any], spawn_worker: Any
) -> None:
    app.run_plan(archive.enable(app.sql, 3600), write=True)
    ids = app.enqueue_many("noop", [()] * 20)
    assert spawn_worker("--burst").wait(60) == 0  # a burst never rotates: the start-up check decides
    assert _where(db, app.schema) == dict.fromkeys(ids, "archive")


def test_the_cli_turns_it_on_and_off_and_says_what_it_holds(
    app: currant.App, database_dsn: str, db: psycopg.Connection[Any]
) -> None:
    mistyped = f"{app.schema}_typo"
    refused = admin(database_dsn, mistyped, "archive", "enable")
    assert refused.returncode == 1 and f"Currant is not installed in schema '{mistyped}'" in refused.stderr
    assert db.execute("SELECT to_regnamespace(%s)", (mistyped,)).fetchone() == (None,)  # not created
    refused = admin(database_dsn, app.schema, "archive", "enable", "--partition", "59")
    assert refused.returncode == 1 and "--partition must be at least 60 seconds, got 59" in refused.stderr
    off = json.loads(admin(database_dsn, app.schema, "archive", "status", "--json").stdout)
    assert off == {"enabled": False, "partition_seconds": None, "enabled_at": None, "partitions": []}
    on = admin(database_dsn, app.schema, "archive", "enable", "--partition", "600")
    assert on.returncode == 0 and "archive on: partitions of 600 s (4 created now)" in on.stdout, on.stderr
    status = admin(database_dsn, app.schema, "archive", "status")
    assert status.stdout.startswith("archive on, partitions of 600 s since "), status.stdout
    assert status.stdout.count("FOR VALUES FROM") == 4 and "archive_default" in status.stdout
    assert "archive off" in admin(database_dsn, app.schema, "archive", "disable").stdout
    assert "the archive was not on" in admin(database_dsn, app.schema, "archive", "disable").stdout
