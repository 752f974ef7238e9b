"""Dependencies, groups with callbacks, chains, and paused queues (issue 15)."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

import currant
from tests.conftest import run_worker_here, wait_for


@pytest.fixture
def flow_app(app: currant.App) -> currant.App:
    """The fixture's App with tasks that record what they were given."""
    app.seen = []  # type: ignore[attr-defined]

    @app.task(name="step")
    def step(x: Any = None, *rest: Any, **kwargs: Any) -> Any:
        app.seen.append(("step", x, rest, kwargs))  # type: ignore[attr-defined]
        return x if not isinstance(x, int) else x + 1

    @app.task(name="boom", max_attempts=1)
    def boom(*args: Any) -> None:
        raise RuntimeError("boom")

    @app.task(name="collect")
    def collect(**kwargs: Any) -> int:
        app.seen.append(("collect", kwargs))  # type: ignore[attr-defined]
        return len(kwargs.get("member_ids", []))

    return app


def _state(app: currant.App, job_id: int) -> str:
    job = app.get_job(job_id)
    assert job is not None
    return job.state


def test_a_dependent_job_waits_for_its_parents(flow_app: currant.App, db: psycopg.Connection[Any]) -> None:
    app = flow_app
    first, second = app.enqueue("step", (1,)), app.enqueue("step", (2,))
    child = app.enqueue("step", (10,), depends_on=[first, second])
    assert _state(app, child) == "waiting" and app.stats()["totals"]["waiting"] == 1
    run_worker_here(app)
    assert [_state(app, job) for job in (first, second, child)] == ["succeeded"] * 3
    (started,) = db.execute(f'SELECT started_at FROM "{app.schema}".jobs WHERE id = %s', (child,)).fetchone()
    finished = db.execute(
        f'SELECT max(finished_at) FROM "{app.schema}".jobs WHERE id = ANY(%s)', ([first, second],)
    ).fetchone()[0]
    assert started >= finished
    # A parent that has already succeeded counts at once.
    late = app.enqueue("step", (20,), depends_on=[first])
    assert _state(app, late) == "queued"


def test_a_failed_parent_cancels_its_dependents_unless_they_run_anyway(flow_app: currant.App) -> None:
    app = flow_app
    parent = app.enqueue("boom")
    cancelled = app.enqueue("step", (1,), depends_on=[parent])
    grandchild = app.enqueue("step", (2,), depends_on=[cancelled])
    runs_anyway = app.enqueue("step", (3,), depends_on=[parent], on_parent_failure="run")
    run_worker_here(app)
    assert _state(app, parent) == "failed"
    job = app.get_job(cancelled)
    assert (
        job is not None and job.state == "cancelled" and f"ParentFailed: job {parent} ended failed" in (job.error or "")
    )
    assert _state(app, grandchild) == "cancelled"  # the cascade goes on
    assert _state(app, runs_anyway) == "succeeded"
    # A parent failed before the child is enqueued: cancelled at once.
    assert _state(app, app.enqueue("step", (4,), depends_on=[parent])) == "cancelled"


def test_unknown_parents_are_refused_and_nothing_is_enqueued(flow_app: currant.App) -> None:
    app = flow_app
    parent = app.enqueue("step", (1,))
    with pytest.raises(ValueError, match="do not exist"):
        app.enqueue("step", (2,), depends_on=[parent, 999_999])
    with pytest.raises(ValueError, match="do not exist"):
        app.enqueue_many("step", [(3,), (4,)], depends_on=[999_999])
    assert app.stats()["totals"]["waiting"] == 0 and sum(app.stats()["totals"].values()) == 1
    with pytest.raises(ValueError, match="no run_at, delay or unique_key"):
        app.enqueue("step", (2,), depends_on=[parent], delay=5)
    with pytest.raises(ValueError, match="on_parent_failure"):
        app.enqueue("step", (2,), depends_on=[parent], on_parent_failure="maybe")


def test_bulk_dependents(flow_app: currant.App) -> None:
    app = flow_app
    parent = app.enqueue("step", (1,))
    children = app.enqueue_many("step", [(i,) for i in range(100)], depends_on=[parent])
    assert {_state(app, job) for job in children} == {"waiting"}
    run_worker_here(app)
    assert {_state(app, job) for job in children} == {"succeeded"}


def test_a_group_callback_runs_once_after_every_member(flow_app: currant.App) -> None:
    app = flow_app
    step, boom, collect = app.tasks["step"], app.tasks["boom"], app.tasks["collect"]
    ids = app.group([step.s(1), step.s(2), boom.s()], callback=collect.s(), pass_results=True)
    group = app.get_group(ids.group_id)
    assert group is not None and group.size == 3 and not group.done and group.callback_state == "waiting"
    run_worker_here(app)
    group = app.get_group(ids.group_id)
    assert group is not None and group.done and group.states == {"succeeded": 2, "failed": 1}
    assert group.callback_state == "succeeded"
    calls = [entry for entry in app.seen if entry[0] == "collect"]  # type: ignore[attr-defined]
    assert len(calls) == 1
    kwargs = calls[0][1]
    assert kwargs["group_id"] == ids.group_id and kwargs["member_ids"] == ids.member_ids
    assert kwargs["results"] == {ids.member_ids[0]: 2, ids.member_ids[1]: 3, ids.member_ids[2]: None}
    # Many jobs of one task: one COPY.
    bulk = app.group((step, [(i,) for i in range(500)]), callback=collect.s())
    run_worker_here(app)
    assert app.get_group(bulk.group_id).states == {"succeeded": 500}  # type: ignore[union-attr]
    assert app.get_job(bulk.callback_id).result == 500  # type: ignore[arg-type, union-attr]


def test_a_chain_passes_results_and_stops_at_a_failure(flow_app: currant.App) -> None:
    app = flow_app
    step, boom = app.tasks["step"], app.tasks["boom"]
    ids = app.chain([step.s(1), step.s(), step.s("extra")], pass_results=True)
    assert [_state(app, job) for job in ids] == ["queued", "waiting", "waiting"]
    run_worker_here(app)
    assert [app.get_job(job).result for job in ids] == [2, 3, 4]  # type: ignore[union-attr]
    assert ("step", 3, ("extra",), {}) in app.seen  # type: ignore[attr-defined]
    broken = app.chain([step.s(1), boom.s(), step.s()], pass_results=True)
    run_worker_here(app)
    assert [_state(app, job) for job in broken] == ["succeeded", "failed", "cancelled"]


def test_cancelling_a_waiting_job_cancels_what_waits_for_it(flow_app: currant.App) -> None:
    app = flow_app
    ids = app.chain([app.tasks["step"].s(1), app.tasks["step"].s(), app.tasks["step"].s()])
    assert app.cancel(ids[1]) == "cancelled"
    assert _state(app, ids[2]) == "cancelled"
    run_worker_here(app)
    assert _state(app, ids[0]) == "succeeded"


def test_a_paused_queue_is_not_claimed_and_running_jobs_finish(flow_app: currant.App, database_dsn: str) -> None:
    app = flow_app
    gate = threading.Event()

    @app.task(name="hold", queue="slow")
    def hold() -> None:
        gate.wait(30)

    held = app.enqueue("hold")
    later: list[int] = []

    def pause_once_running() -> None:
        wait_for(lambda: _state(app, held) == "running", message="the held job runs")
        assert app.pause("slow") and not app.pause("slow")
        later.append(app.enqueue("step", (1,), queue="slow"))  # the worker is awake: it polls every 0.1 s
        later.append(app.enqueue("step", (2,)))
        gate.set()

    pauser = threading.Thread(target=pause_once_running)
    pauser.start()
    run_worker_here(app, concurrency=1, batch_size=1)
    pauser.join()
    assert (_state(app, held), _state(app, later[0]), _state(app, later[1])) == ("succeeded", "queued", "succeeded")
    assert list(app.paused_queues()) == ["slow"]
    assert app.resume("slow") and not app.resume("slow")
    run_worker_here(app)
    assert _state(app, later[0]) == "succeeded"


def test_the_readme_workflow_example_runs_as_written(
    database_dsn: str, schema_name: str, tmp_path: Any, db: psycopg.Connection[Any]
) -> None:
    from tests.integration.test_first_hour import _env, _run, readme_block

    (tmp_path / "workflows.py").write_text(readme_block("file workflows.py"), encoding="utf-8")
    env = _env(database_dsn, schema_name)
    for command in filter(None, readme_block("workflow commands").splitlines()):
        proc = _run(command, tmp_path, env)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr[-3000:])
    rows = db.execute(f'SELECT task, state::text, result FROM "{schema_name}".jobs ORDER BY id').fetchall()
    assert {state for _, state, _ in rows} == {"succeeded"}, rows
    results = [(task, currant.codec.unpack_value(result) if result else None) for task, _, result in rows]
    assert results[:7] == [
        ("workflows.measure", 5),
        ("workflows.double", 42),  # depends_on: ran after measure, with its own argument
        ("workflows.measure", 1),
        ("workflows.measure", 2),
        ("workflows.total", 3),  # the group's callback, with the members' results
        ("workflows.measure", 4),
        ("workflows.double", 8),  # the chain passed 4 on
    ]
    paced = db.execute(
        f'SELECT extract(epoch FROM max(started_at) - min(started_at)) FROM "{schema_name}".jobs'
        " WHERE task = 'workflows.call_api'"
    ).fetchone()[0]
    assert paced >= 1.0  # 10 jobs at 5/s, a bucket of one: at least 9 tokens' wait
