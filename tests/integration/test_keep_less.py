"""keep_succeeded = 0 (issue 16, target 1): a job that returns None is deleted as it completes.

What must still hold: every job runs once and is counted; a job that returns a
value, that others wait for, or that belongs to a group is kept until the next
prune (its result, its dependents' release, its group's count); a failure is
kept; and the deleting completion is fenced like the marking one.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg

import currant
from currant.flow import Call
from currant.worker.arrays import int8_array, register_array_dumpers
from tests.conftest import mark_running, run_worker_here


def _activity(db: psycopg.Connection[Any], schema: str) -> dict[tuple[str, str], int]:
    rows = db.execute(f'SELECT task, outcome, sum(jobs)::int FROM "{schema}".activity GROUP BY 1, 2').fetchall()
    return {(task, outcome): jobs for task, outcome, jobs in rows}


def test_every_job_runs_once_and_is_counted_and_no_success_is_kept(
    app: currant.App, db: psycopg.Connection[Any], database_dsn: str
) -> None:
    ran: list[Any] = []

    @app.task(name="nothing")
    def nothing(i: int) -> None:
        ran.append(i)

    @app.task(name="value")
    def value() -> int:
        return 42

    @app.task(name="broken", max_attempts=1)
    def broken() -> None:
        raise RuntimeError("broken on purpose")

    nothing.enqueue_many([(i,) for i in range(300)])
    value.enqueue()
    failure = broken.enqueue()
    parent = nothing.enqueue(-1)
    nothing.options(depends_on=[parent]).enqueue(-2)
    app.group([nothing.s(-3), nothing.s(-4)])

    class CountKept:
        """After each completion batch: how many plain successes the table still holds."""

        seen: list[int] = []

        def after_batch(self, attempts: object) -> None:
            with psycopg.connect(database_dsn, autocommit=True) as conn:
                (kept,) = conn.execute(
                    f"SELECT count(*) FROM \"{app.schema}\".jobs WHERE task = 'nothing' AND state = 'succeeded'"
                ).fetchone()  # type: ignore[misc]
            self.seen.append(kept)

    app.add_hook(CountKept())
    worker = run_worker_here(app, keep_succeeded=0.0)
    # Deleted by the completion itself, not by a later prune (a parent and a
    # group member are kept for a moment: see the next test).
    assert CountKept.seen and max(CountKept.seen) <= 3

    assert sorted(ran) == [-4, -3, -2, -1, *range(300)]
    assert worker.state.tally.summary().startswith("305 succeeded, 1 failed")
    assert _activity(db, app.schema) == {
        ("nothing", "succeeded"): 304,
        ("value", "succeeded"): 1,
        ("broken", "failed"): 1,
    }
    # The plain ones at completion, the others by the burst's last prune;
    # failures have their own retention.
    assert db.execute(f'SELECT id, state::text FROM "{app.schema}".jobs').fetchall() == [(failure, "failed")]


def _complete(app: currant.App, db: psycopg.Connection[Any], ids: list[int], worker: int, attempt: int = 1) -> Any:
    register_array_dumpers(db)  # the array goes as the worker sends it: binary, built by the core
    return db.execute(
        app.sql["complete_succeeded_discarding"], {"ids": int8_array(ids), "attempt": attempt, "worker": worker}
    ).fetchone()


def _states(app: currant.App, db: psycopg.Connection[Any]) -> dict[int, str]:
    return dict(db.execute(f'SELECT id, state::text FROM "{app.schema}".jobs').fetchall())


def test_a_parent_and_a_group_member_are_marked_not_deleted(app: currant.App, db: psycopg.Connection[Any]) -> None:
    plain = app.enqueue("anything")
    parent = app.enqueue("anything")
    child = app.enqueue("anything", depends_on=[parent])
    member, other = app.group([Call("anything"), Call("anything")]).member_ids
    worker = mark_running(app, db, [plain, parent, member])
    assert tuple(_complete(app, db, [plain, parent, member], worker)) == (3, None)
    # The parent's update released its child; the group counts its member.
    assert _states(app, db) == {parent: "succeeded", child: "queued", member: "succeeded", other: "queued"}


def test_the_deleting_completion_is_fenced(app: currant.App, db: psycopg.Connection[Any]) -> None:
    ids = app.enqueue_many("anything", [()] * 3)
    worker = mark_running(app, db, ids)
    assert tuple(_complete(app, db, ids, worker + 1)) == (0, [])  # another worker's lease
    assert tuple(_complete(app, db, ids, worker, attempt=2)) == (0, [])  # another attempt
    assert _states(app, db) == dict.fromkeys(ids, "running")
    assert tuple(_complete(app, db, ids, worker)) == (3, None)
    assert _states(app, db) == {}


def test_the_cli_takes_zero_and_refuses_a_negative_retention() -> None:
    def parse(value: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "currant.worker", "tests.apps.jobs:app", "--keep-succeeded", value, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert parse("0").returncode == 0
    refused = parse("-1")
    assert refused.returncode == 2
    assert "--keep-succeeded: expected 0 or a positive number of seconds, got '-1'" in refused.stderr
    assert "--keep-succeeded: expected a number of seconds, got 'a day'" in parse("a day").stderr
