"""Django's task framework, wherever it lives: ``django.tasks`` (Django 6.0+) or
the ``django-tasks`` backport (``django_tasks``, Django 4.2+ on Python 3.10+).

The same API under two names (and a few renamed exceptions); everything else
in :mod:`currant.contrib.django` imports it from here.
"""

from __future__ import annotations

from typing import Any

# The type checker sees Django 6's names (django-stubs); the backport's are the same API.

try:
    from django.tasks import task, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import InvalidTask as InvalidTaskError
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    FRAMEWORK = "django.tasks"
except ImportError:
    try:
        from django_tasks import task, task_backends  # type: ignore[assignment,no-redef,unused-ignore]
        from django_tasks.backends.base import BaseTaskBackend  # type: ignore[assignment,no-redef,unused-ignore]
        from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus  # type: ignore[assignment,no-redef,unused-ignore]
        from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist  # type: ignore[assignment,no-redef,unused-ignore]
        from django_tasks.signals import task_enqueued, task_finished, task_started  # type: ignore[assignment,no-redef,unused-ignore]
        from django_tasks.utils import normalize_json  # type: ignore[assignment,no-redef,unused-ignore]

        FRAMEWORK = "django_tasks"
    except ImportError as exc:
        raise ImportError(
            "currant.contrib.django needs Django's task framework: Django 6.0+ (django.tasks), or on"
            " Django 5.2 the backport: pip install django-tasks"
        ) from exc


def set_return_value(result: Any, value: Any) -> None:
    """TaskResult is frozen and takes its return value after construction (as Django's own backends do)."""
    object.__setattr__(result, "_return_value", value)


__all__ = [
    "FRAMEWORK",
    "BaseTaskBackend",
    "InvalidTaskError",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "set_return_value",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
