"""The backend at run time: one App per configuration whatever the thread, the
worker's connections made as Django makes its own, and Django's connections
kept healthy around async tasks."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

pytest.importorskip("django")
pytest.importorskip("currant.contrib.django.compat", reason="needs django.tasks (Django 6) or django-tasks")


def test_backends_of_several_threads_share_one_app_and_pool(backend: Any) -> None:
    """Django keeps a backend instance per thread: they must not each open a pool."""
    from currant.contrib.django.compat import task_backends

    found: list[Any] = []

    def look() -> None:
        found.append(task_backends["default"])

    threads = [threading.Thread(target=look) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(found) == 3
    assert len({id(instance) for instance in [backend, *found]}) == 4  # Django's: one per thread
    assert all(instance.app is backend.app for instance in found)  # Currant's: one App, one pool


def test_the_workers_dsn_carries_the_databases_options(django_ready: None, schema_name: str) -> None:
    from django.test import override_settings
    from psycopg.conninfo import conninfo_to_dict

    from currant.contrib.django.compat import task_backends

    setting = {
        "default": {
            "BACKEND": "currant.contrib.django.CurrantBackend",
            "OPTIONS": {"DATABASE": "with_options", "SCHEMA": schema_name},
        }
    }
    with override_settings(TASKS=setting):
        app = task_backends["default"].app
        params = conninfo_to_dict(app.dsn)
        assert not {"cursor_factory", "context", "server_side_binding", "prepare_threshold"} & set(params)
        # What the worker and currant_migrate connect with (App.dsn) is Django's connection.
        with app.connect() as conn:
            assert conn.execute("SHOW currant_test.origin").fetchone() == ("django-options",)
            assert conn.execute("SHOW application_name").fetchone() == ("currant-django-options",)
        assert app.migrate()  # and works: currant_migrate's path


def test_an_async_task_whose_start_fails_is_still_reported_finished(backend: Any) -> None:
    from currant.contrib.django.compat import task_finished, task_started
    from currant.testing import drain
    from tests.contrib_django import tasks

    class Refused(Exception):
        pass

    finished: list[str] = []

    def refuse(sender: Any, task_result: Any, **kwargs: Any) -> None:
        raise Refused("a task_started receiver failed")

    def note(sender: Any, task_result: Any, **kwargs: Any) -> None:
        finished.append(str(task_result.status))

    task_started.connect(refuse)
    task_finished.connect(note)
    try:
        result = tasks.async_add.enqueue(1, 2)
        report = drain(backend.app, fail_fast=False)
    finally:
        task_started.disconnect(refuse)
        task_finished.disconnect(note)
    assert report.failed == [int(result.id)]
    assert finished == ["FAILED"]


def test_async_tasks_reconnect_after_their_threads_connection_died(backend: Any, db: psycopg.Connection[Any]) -> None:
    """sync_to_async runs the signals' database work on executor threads, whose
    Django connections no request cycle checks: a server restart killed them for good."""
    from django.db import connection

    from currant.contrib.django.compat import task_finished
    from currant.testing import drain
    from tests.contrib_django import tasks

    threads: list[int] = []

    def kill_own_connection(sender: Any, task_result: Any, **kwargs: Any) -> None:
        # Runs on the executor thread, after the job's own database work.
        threads.append(threading.get_ident())
        connection.ensure_connection()
        pid = connection.connection.info.backend_pid
        db.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 30  # gone for sure before the next job asks for it
        while db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() is not None:
            assert time.monotonic() < deadline, f"backend {pid} still there after pg_terminate_backend"
            time.sleep(0.01)

    task_finished.connect(kill_own_connection)
    try:
        first = tasks.async_add.enqueue(1, 2)
        second = tasks.async_add.enqueue(3, 4)
        report = drain(backend.app)
    finally:
        task_finished.disconnect(kill_own_connection)
    assert report.succeeded == [int(first.id), int(second.id)]
    assert len(threads) == 2


def test_drain_serves_the_backends_queues_by_default(backend: Any) -> None:
    """Django's tasks are found as jobs name them: a queue chosen with .using() is
    known to the drain only from the backend's QUEUES."""
    from currant.testing import drain
    from tests.contrib_django import tasks

    mailed = tasks.record.using(queue_name="mail").enqueue("to the mail queue")
    assert drain(backend.app).succeeded == [int(mailed.id)]


def test_a_task_module_that_raises_on_import_fails_its_jobs_and_is_logged_once(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from currant.testing import drain

    name = "tests.contrib_django.broken_tasks.anything"
    jobs = [backend.app.enqueue(name, [], {}), backend.app.enqueue(name, [], {})]
    with caplog.at_level("ERROR", logger="currant.contrib.django"):
        report = drain(backend.app, fail_fast=False)
    # As of an unknown task (retried later, a worker that knows it may come): the drain, a worker's lane, goes on.
    assert [(a.id, a.error.split(":")[0] if a.error else None) for a in report.attempts] == [
        (job, "UnknownTask") for job in jobs
    ]
    logged = [record for record in caplog.records if name in record.getMessage()]
    assert len(logged) == 1 and "broken on purpose" in (logged[0].exc_text or "")


def test_a_misconfigured_backend_is_reported_with_its_cause(django_ready: None) -> None:
    from django.core.management.base import CommandError
    from django.test import override_settings

    from currant.contrib.django.backends import backend_named

    broken = {"default": {"BACKEND": "currant.contrib.django.CurrantBackend", "OPTIONS": {"SCHEMAS": "x"}}}
    with override_settings(TASKS=broken):
        with pytest.raises(CommandError, match="could not load task backend 'default'.*unknown key SCHEMAS"):
            backend_named("default", CommandError)
        with pytest.raises(CommandError, match="no task backend 'other' in TASKS"):
            backend_named("other", CommandError)
