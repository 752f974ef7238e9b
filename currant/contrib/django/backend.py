"""``CurrantBackend``: Django's task framework (DEP 14) on Currant.

::

    TASKS = {
        "default": {
            "BACKEND": "currant.contrib.django.CurrantBackend",
            "QUEUES": ["default", "mail"],        # [] allows any queue
            "OPTIONS": {
                "DATABASE": "default",            # the Django database whose connection enqueues
                # "DSN": "postgresql://...",       # or a database of its own (no shared transaction)
                "SCHEMA": "currant",              # where Currant's tables live
                "MAX_ATTEMPTS": 1,                # Django's semantics: a task that raises has FAILED
            },
        }
    }

By default a task is enqueued **on the Django connection itself**: inside
``transaction.atomic()`` the job is part of the transaction, rolled back with
it and visible (and announced to workers) at its commit. Results are read
the same way, so code inside the transaction sees its own jobs.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.utils import timezone
from psycopg.conninfo import make_conninfo
from psycopg.types.json import JsonLoader

from ... import control
from ...app import App
from ...names import check_name
from . import compat
from .results import django_task, task_result
from .runner import DjangoTasks

OPTION_KEYS = frozenset({"DATABASE", "DSN", "SCHEMA", "MAX_ATTEMPTS"})

# What a missing schema looks like to PostgreSQL: no such table, schema or function.
_NO_SCHEMA = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction)


class CurrantBackend(compat.BaseTaskBackend):
    supports_defer = True
    supports_priority = True  # Django's -100..100 is Currant's priority as is: higher runs first
    supports_get_result = True
    supports_async_task = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = dict(self.options)
        where = f"TASKS[{alias!r}]['OPTIONS']"
        unknown = sorted(set(options) - OPTION_KEYS)
        if unknown:
            raise ImproperlyConfigured(
                f"{where}: unknown key {', '.join(unknown)} (known: {', '.join(sorted(OPTION_KEYS))})"
            )
        if "DSN" in options and "DATABASE" in options:
            raise ImproperlyConfigured(f"{where}: give DATABASE or DSN, not both")
        attempts = options.get("MAX_ATTEMPTS", 1)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ImproperlyConfigured(
                f"{where}['MAX_ATTEMPTS'] must be a whole number of at least 1, got {attempts!r}"
            )
        self.max_attempts: int = attempts
        # The worker claims queues strictly in this order (Django keeps QUEUES as a set).
        self.queue_order: list[str] = list(dict.fromkeys(params.get("QUEUES") or ["default"]))
        for queue in self.queues:
            check_name("queue", queue)
        self.database: str | None = None if "DSN" in options else str(options.get("DATABASE", "default"))
        dsn = options.get("DSN") or _database_dsn(self.database or "default", where)
        self.app = _shared_app(self, dsn, options.get("SCHEMA"), where)

    # -- enqueue -------------------------------------------------------------

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        args = compat.normalize_json(list(args))  # JSON-compatible only (DEP 14), as Django's own backends
        kwargs = compat.normalize_json(dict(kwargs))
        with self._connection() as connection:
            job_id = self.app.enqueue(
                task.module_path,
                args,
                kwargs,
                queue=task.queue_name,
                priority=task.priority,
                run_at=task.run_after,
                max_attempts=self.max_attempts,
                connection=connection,
            )
        result: Any = compat.TaskResult(
            task=task,
            id=str(job_id),
            status=compat.TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        compat.task_enqueued.send(type(self), task_result=result)
        return result

    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        try:
            check_name("queue", task.queue_name)
        except (TypeError, ValueError) as exc:
            raise compat.InvalidTaskError(str(exc)) from None

    # -- results -------------------------------------------------------------

    def get_result(self, result_id: str) -> Any:
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise compat.TaskResultDoesNotExist(result_id) from None
        if not 1 <= job_id < 1 << 63:
            raise compat.TaskResultDoesNotExist(result_id)
        with self._connection() as connection:
            if connection is None:
                job = self.app.get_job(job_id)
            else:
                # Django's own connection, so a transaction sees its own jobs; but Django
                # loads json as text (its fields parse it): this cursor parses it again.
                cursor = connection.cursor()
                for name in ("json", "jsonb"):
                    cursor.adapters.register_loader(name, JsonLoader)
                row = cursor.execute(self.app.sql["get_job"], {"id": job_id}).fetchone()
                job = control.job_from_row(row)
        task = django_task(job.task, self.alias) if job is not None else None
        if job is None or task is None:  # no such job, or not a Django task's
            raise compat.TaskResultDoesNotExist(result_id)
        return task_result(job, task, self.alias)

    # -- connections -----------------------------------------------------------

    def _connection(self) -> _Borrowed:
        return _Borrowed(self)

    def django_connection(self) -> psycopg.Connection[Any] | None:
        """The psycopg connection of the Django database this backend enqueues on (None with a DSN)."""
        if self.database is None:
            return None
        wrapper = connections[self.database]
        wrapper.ensure_connection()
        raw = wrapper.connection
        if not isinstance(raw, psycopg.Connection):
            raise ImproperlyConfigured(
                f"database {self.database!r} is not PostgreSQL through psycopg 3: Currant needs"
                " ENGINE 'django.db.backends.postgresql' with psycopg 3 installed (or OPTIONS['DSN'])"
            )
        return raw


class _Borrowed:
    """The connection to run on, with a missing schema reported as the setup mistake it is."""

    def __init__(self, backend: CurrantBackend) -> None:
        self.backend = backend

    def __enter__(self) -> psycopg.Connection[Any] | None:
        return self.backend.django_connection()

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, _NO_SCHEMA):
            raise ImproperlyConfigured(
                f"Currant's schema {self.backend.app.schema!r} is missing or out of date in the database:"
                f" run `python manage.py currant_migrate` ({type(exc).__name__}: {exc})"
            ) from exc


# One App per backend configuration, shared by every instance Django makes of it:
# Django's task_backends keeps an instance per thread and per async context
# (asgiref Local), so an App per instance meant a connection pool per thread,
# never closed (runserver: a thread per request). Kept for the process's life,
# like the settings they come from; a changed setting (override_settings in a
# test) is another key, and so another App.
_apps: dict[tuple[Any, ...], App] = {}
_apps_lock = threading.Lock()


def _shared_app(backend: CurrantBackend, dsn: str, schema: str | None, where: str) -> App:
    key = (backend.alias, dsn, schema, backend.database, backend.max_attempts, tuple(backend.queue_order))
    with _apps_lock:
        app = _apps.get(key)
        if app is None:
            try:
                app = App(dsn, schema=schema, auto_migrate=False)
            except ValueError as exc:
                raise ImproperlyConfigured(f"{where}: {exc}") from None
            # The registry resolves tasks through this first instance: what it
            # uses (alias, max_attempts, get_result on the calling thread's
            # Django connection) is the same for every instance of this key.
            app.tasks = DjangoTasks(backend)
            _apps[key] = app
        return app


def _libpq_keywords() -> frozenset[str]:
    return frozenset(option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults())


def _database_dsn(alias: str, where: str) -> str:
    """A connection string for a Django database (the worker and migrations use it).

    Built from what Django itself connects with, so DATABASES' OPTIONS (sslmode,
    sslrootcert, service, passfile, options, target_session_attrs, ...) apply to
    the worker too; Django's own keys (cursor_factory, context, pool,
    prepare_threshold, ...) mean nothing to libpq and are left out.
    """
    if alias not in connections.settings:
        raise ImproperlyConfigured(f"{where}['DATABASE']: no database {alias!r} in DATABASES")
    settings = connections.settings[alias]
    if "postgresql" not in str(settings.get("ENGINE", "")):
        raise ImproperlyConfigured(f"{where}: database {alias!r} is not PostgreSQL; Currant needs PostgreSQL")
    params = connections[alias].get_connection_params()
    known = _libpq_keywords()
    return make_conninfo(
        **{key: str(value) for key, value in params.items() if key in known and value is not None and value != ""}
    )
