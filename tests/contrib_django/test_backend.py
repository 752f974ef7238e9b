"""Currant as Django's task backend, driven only through Django's public API:
``@task``, ``.enqueue()``, ``.aenqueue()``, ``get_result()``, ``TaskResult.refresh()``,
the signals and ``transaction.atomic()``. Django's own code is the client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT, state_counts

pytest.importorskip("django")
pytest.importorskip("currant.contrib.django.compat", reason="needs django.tasks (Django 6) or django-tasks")


def _jobs(db: psycopg.Connection[Any], schema: str) -> int:
    return db.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()[0]


def test_enqueue_in_a_rolled_back_atomic_block_leaves_no_job(backend: Any, db: psycopg.Connection[Any]) -> None:
    from django.db import transaction

    from currant.contrib.django.compat import TaskResultDoesNotExist, TaskResultStatus
    from tests.contrib_django import tasks

    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        result = tasks.add.enqueue(1, 2)
        seen = tasks.add.get_result(result.id)  # the transaction sees its own job
        assert seen.status == TaskResultStatus.READY and seen.args == [1, 2]
        assert _jobs(db, backend.app.schema) == 0  # nobody else does
        raise Undo
    assert _jobs(db, backend.app.schema) == 0
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(result.id)


def test_enqueue_in_a_committed_atomic_block_appears_at_commit(backend: Any, db: psycopg.Connection[Any]) -> None:
    from django.db import transaction

    from tests.contrib_django import tasks

    with transaction.atomic():
        tasks.add.enqueue(1, 2)
        assert _jobs(db, backend.app.schema) == 0
    assert _jobs(db, backend.app.schema) == 1


def test_manage_py_worker_runs_tasks_and_refresh_reads_the_outcome(
    backend: Any, database_dsn: str, schema_name: str
) -> None:
    from currant.contrib.django.compat import TaskResultStatus
    from tests.contrib_django import tasks

    added = tasks.add.enqueue(2, 3)
    failed = tasks.fail.enqueue("it broke")
    async_added = tasks.async_add.enqueue(4, 5)
    context = tasks.whoami.enqueue()
    assert added.status == TaskResultStatus.READY and added.id.isdigit()
    env = {
        **os.environ,
        "CURRANT_DJANGO_DSN": database_dsn,
        "CURRANT_SCHEMA": schema_name,
        "DJANGO_SETTINGS_MODULE": "tests.contrib_django.settings",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests/contrib_django/manage.py"),
            "currant_worker",
            "--burst",
            "--heartbeat",
            "0.2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 jobs processed" in proc.stderr, proc.stderr[-3000:]
    added.refresh()
    assert added.status == TaskResultStatus.SUCCESSFUL
    assert added.return_value == 5
    assert added.enqueued_at <= added.started_at <= added.finished_at
    assert added.attempts == 1 and added.errors == []
    failed.refresh()
    assert failed.status == TaskResultStatus.FAILED  # MAX_ATTEMPTS defaults to 1: Django's semantics
    assert [error.exception_class_path for error in failed.errors] == ["tests.contrib_django.tasks.Trouble"]
    assert "it broke" in failed.errors[0].traceback and "raise Trouble(message)" in failed.errors[0].traceback
    assert failed.errors[0].exception_class is tasks.Trouble
    assert tasks.async_add.get_result(async_added.id).return_value == 9
    context.refresh()
    assert context.return_value == {"id": context.id, "attempt": 1, "status": "RUNNING"}


def test_signals_priority_and_run_after_with_an_in_process_drain(backend: Any) -> None:
    from django.utils import timezone

    from currant.contrib.django.compat import TaskResultStatus, task_enqueued, task_finished, task_started
    from currant.testing import drain
    from tests.contrib_django import tasks

    heard: list[tuple[str, str, str]] = []

    def listener(name: str) -> Any:
        def receive(sender: Any, task_result: Any, **kwargs: Any) -> None:
            heard.append((name, task_result.id, str(task_result.status)))

        return receive

    receivers = {
        signal: listener(name)
        for signal, name in ((task_enqueued, "enqueued"), (task_started, "started"), (task_finished, "finished"))
    }
    for signal, receive in receivers.items():
        signal.connect(receive)
    try:
        low = tasks.record.using(priority=-50).enqueue("low")
        high = tasks.record.using(priority=100).enqueue("high")
        later = tasks.record.using(run_after=timezone.now() + timedelta(hours=1)).enqueue("later")
        broken = tasks.fail.enqueue("boom")
        report = drain(backend.app, fail_fast=False)
    finally:
        for signal, receive in receivers.items():
            signal.disconnect(receive)
    assert report.outcomes == {int(high.id): "succeeded", int(low.id): "succeeded", int(broken.id): "failed"}
    assert list(report.outcomes)[:2] == [int(high.id), int(low.id)]  # priority 100 before -50
    assert tasks.record.get_result(later.id).status == TaskResultStatus.READY  # run_after: not due yet
    assert ("enqueued", low.id, "READY") in heard
    assert ("started", high.id, "RUNNING") in heard and ("finished", high.id, "SUCCESSFUL") in heard
    assert ("finished", broken.id, "FAILED") in heard
    assert [entry[0] for entry in heard if entry[1] == high.id] == ["enqueued", "started", "finished"]
    assert drain(backend.app, advance_clock=3601).succeeded == [int(later.id)]


def test_async_api(backend: Any) -> None:
    from currant.contrib.django.compat import TaskResultStatus
    from currant.testing import adrain
    from tests.contrib_django import tasks

    async def scenario() -> Any:
        result = await tasks.async_add.aenqueue(20, 22)
        await adrain(backend.app)
        fetched = await tasks.async_add.aget_result(result.id)
        await result.arefresh()
        return result, fetched

    result, fetched = asyncio.run(scenario())
    assert result.status == fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 42


def test_bad_input_is_refused_with_a_clear_error(backend: Any, db: psycopg.Connection[Any]) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from currant.contrib.django import CurrantBackend
    from currant.contrib.django.compat import InvalidTaskError, TaskResultDoesNotExist
    from tests.contrib_django import tasks

    for unknown in ("nope", "0", "999999", "-3"):
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(unknown)
    with pytest.raises(InvalidTaskError, match="Queue 'other'"):
        tasks.add.using(queue_name="other")
    with pytest.raises(TypeError):
        tasks.add.enqueue(object(), 1)  # not JSON: refused before anything is written
    assert state_counts(db, backend.app.schema) == {}
    with pytest.raises(ImproperlyConfigured, match="unknown key SCHEMAS"):
        CurrantBackend("x", {"OPTIONS": {"SCHEMAS": "a"}})
    with pytest.raises(ImproperlyConfigured, match="MAX_ATTEMPTS"):
        CurrantBackend("x", {"OPTIONS": {"MAX_ATTEMPTS": 0}})


def test_a_missing_schema_says_to_run_currant_migrate(django_ready: None, schema_name: str) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import call_command
    from django.test import override_settings

    from currant.contrib.django.compat import task_backends
    from tests.contrib_django import tasks
    from tests.contrib_django.settings import tasks_setting

    with override_settings(TASKS=tasks_setting(f"{schema_name}_new")):
        with pytest.raises(ImproperlyConfigured, match="currant_migrate"):
            tasks.add.enqueue(1, 1)
        call_command("currant_migrate")
        assert tasks.add.enqueue(1, 1).id.isdigit()
        task_backends["default"].app.close()


def test_manage_py_worker_refuses_what_it_cannot_do(backend: Any, database_dsn: str, schema_name: str) -> None:
    env = {**os.environ, "CURRANT_DJANGO_DSN": database_dsn, "CURRANT_SCHEMA": schema_name, "PYTHONPATH": str(ROOT)}
    manage = [sys.executable, str(ROOT / "tests/contrib_django/manage.py"), "currant_worker"]
    for args, message in (
        (["--processes", "2"], "--processes is not available here"),
        (["--backend", "nope"], "no task backend 'nope'"),
        (["--concurrency", "0"], "expected a whole number of at least 1"),
    ):
        proc = subprocess.run([*manage, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert message in proc.stderr, (args, proc.stderr[-2000:])


def test_a_dsn_option_enqueues_on_a_connection_of_its_own(
    django_ready: None, database_dsn: str, schema_name: str, db: psycopg.Connection[Any]
) -> None:
    from django.db import transaction
    from django.test import override_settings

    from currant.contrib.django.compat import TaskResultStatus, task_backends
    from tests.contrib_django import tasks

    setting = {
        "default": {
            "BACKEND": "currant.contrib.django.CurrantBackend",
            "OPTIONS": {"DSN": database_dsn, "SCHEMA": schema_name},
        }
    }
    with override_settings(TASKS=setting):
        backend = task_backends["default"]
        backend.app.migrate()
        try:

            class Undo(Exception):
                pass

            with pytest.raises(Undo), transaction.atomic():
                result = tasks.add.enqueue(1, 2)
                assert _jobs(db, schema_name) == 1  # committed at once: not part of Django's transaction
                raise Undo
            assert _jobs(db, schema_name) == 1  # the rollback did not take it
            assert tasks.add.get_result(result.id).status == TaskResultStatus.READY
        finally:
            backend.app.close()


def test_drain_on_djangos_connection_runs_jobs_of_an_uncommitted_transaction(
    backend: Any, db: psycopg.Connection[Any]
) -> None:
    """Like Django's TestCase: the test's transaction never commits, and the drain
    runs in it (on the same connection), so it sees, runs and then loses the jobs."""
    from django.db import connection, transaction

    from currant.contrib.django.compat import TaskResultStatus
    from currant.testing import drain
    from tests.contrib_django import tasks

    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        result = tasks.add.enqueue(20, 1)
        connection.ensure_connection()
        report = drain(backend.app, connection=connection.connection)
        assert report.succeeded == [int(result.id)]
        result.refresh()
        assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 21)
        raise Undo
    assert _jobs(db, backend.app.schema) == 0
