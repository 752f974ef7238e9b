"""The worker's side: a Django task, run as a Currant task.

A job's task name is the Django task's module path. The worker resolves
names on first sight (:class:`DjangoTasks`): Django keeps no registry of
tasks, and importing by path is what ``Task.get_result`` does too. Each run
sends ``task_started`` and, once the attempt is final, ``task_finished``
with the result as the database will record it, like Django's own backends.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import Any, Protocol, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.utils import timezone

from ...app import App
from ...job import current_job
from ...task import Task
from . import compat
from .results import django_task

log = logging.getLogger("currant.contrib.django")
T = TypeVar("T")


class CurrantBackend(Protocol):
    """What running a task needs of :class:`~currant.contrib.django.backend.CurrantBackend`."""

    alias: str
    app: App
    max_attempts: int
    queue_order: list[str]

    def get_result(self, result_id: str) -> Any: ...


class DjangoTasks(dict[str, Task[Any, Any]]):
    """The backend App's tasks: Django tasks, found by module path when a job first names one."""

    def __init__(self, backend: CurrantBackend) -> None:
        super().__init__()
        self.backend = backend
        self.missing: set[str] = set()
        # What currant.testing.drain serves by default: tasks are found only as
        # jobs name them, so the queues must come from the backend's QUEUES.
        self.queue_order = list(backend.queue_order)

    def get(self, name: str, default: Any = None) -> Any:
        found = super().get(name)
        if found is not None or name in self.missing:
            return found if found is not None else default
        task = django_task(name, self.backend.alias)
        if task is None:
            self.missing.add(name)  # the worker then reports the job's task as unknown
            return default
        wrapped: Task[Any, Any] = Task(
            self.backend.app,
            make_runner(self.backend, task),
            name=name,
            queue=task.queue_name,
            max_attempts=self.backend.max_attempts,
        )
        self[name] = wrapped
        return wrapped


def make_runner(backend: CurrantBackend, task: Any) -> Callable[..., Any]:
    """The Currant handler of a Django task: sync or async like the task itself."""
    if iscoroutinefunction(task.func):

        async def run_async(*args: Any, **kwargs: Any) -> Any:
            result: Any = None
            try:  # a failed start (a receiver, the database) is the task's failure, and finishes it
                result = await sync_to_async(_fresh(_started), thread_sensitive=False)(backend)
                value = await (
                    task.acall(_context(result), *args, **kwargs) if task.takes_context else task.acall(*args, **kwargs)
                )
                value = compat.normalize_json(value)
            except BaseException as exc:
                await sync_to_async(_fresh(_finished), thread_sensitive=False)(backend, result, None, exc)
                raise
            await sync_to_async(_fresh(_finished), thread_sensitive=False)(backend, result, value, None)
            return value

        return run_async

    def run(*args: Any, **kwargs: Any) -> Any:
        result: Any = None
        try:
            result = _started(backend)
            value = task.call(_context(result), *args, **kwargs) if task.takes_context else task.call(*args, **kwargs)
            value = compat.normalize_json(value)
        except BaseException as exc:
            _finished(backend, result, None, exc)
            raise
        _finished(backend, result, value, None)
        return value

    return run


def _fresh(function: Callable[..., T]) -> Callable[..., T]:
    """``function`` with Django's connection checks around it, for sync_to_async's
    executor threads: their connections see no request cycle (the worker's
    CloseOldConnections runs on its own thread), so one the server dropped
    (a restart) would fail every later async job, and one past CONN_MAX_AGE
    would stay open."""

    def fresh(*args: Any, **kwargs: Any) -> T:
        close_old_connections()
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return fresh


def _context(result: Any) -> Any:
    return compat.TaskContext(task_result=result)


def _started(backend: CurrantBackend) -> Any:
    """The running job's TaskResult, announced with ``task_started``."""
    job = current_job()
    assert job is not None  # a handler runs inside its job
    result = backend.get_result(str(job.id))
    compat.task_started.send(sender=type(backend), task_result=result)
    return result


def _finished(backend: CurrantBackend, result: Any, value: Any, error: BaseException | None) -> None:
    """``task_finished``, when this attempt is the task's last: it succeeded, or failed with no attempt left.

    ``result`` is None when the start failed (before ``task_started`` was sent, or in it).
    """
    job = current_job()
    assert job is not None
    limit = job.max_attempts if job.max_attempts is not None else backend.max_attempts
    if error is not None and job.attempt < limit:
        return  # retried: not finished
    if result is None:
        try:
            result = backend.get_result(str(job.id))
        except Exception:  # the job's own error is the one to record: say why no signal, and go on
            log.exception("job %s: task_finished not sent (its TaskResult could not be read)", job.id)
            return
    errors = list(result.errors)
    status = compat.TaskResultStatus.SUCCESSFUL
    if error is not None:
        status = compat.TaskResultStatus.FAILED
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        errors.append(compat.TaskError(exception_class_path=_path(type(error)), traceback=text))
    final = dataclasses.replace(result, status=status, finished_at=timezone.now(), errors=errors)
    if error is None:
        compat.set_return_value(final, value)
    compat.task_finished.send(sender=type(backend), task_result=final)


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
