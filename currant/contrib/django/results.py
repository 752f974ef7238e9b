"""A Currant job as Django sees it: a ``TaskResult``.

The job row is the one record of a task's life, so every field is read from
it: the status from the job's state, the timestamps, the return value, and
one ``TaskError`` per failed attempt (the exception's class path and
traceback, as the worker stored them).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.utils.module_loading import import_string

from ...job import Job
from . import compat

log = logging.getLogger("currant.contrib.django")
# Task paths whose module raised on import, already logged.
_unimportable: set[str] = set()

# Every state of a job that may still run is READY for Django: waiting for
# parents, queued, scheduled, or waiting for a retry.
STATUS_OF_STATE = {
    "waiting": compat.TaskResultStatus.READY,
    "queued": compat.TaskResultStatus.READY,
    "scheduled": compat.TaskResultStatus.READY,
    "retrying": compat.TaskResultStatus.READY,
    "running": compat.TaskResultStatus.RUNNING,
    "succeeded": compat.TaskResultStatus.SUCCESSFUL,
    "failed": compat.TaskResultStatus.FAILED,
    "cancelled": compat.TaskResultStatus.FAILED,
}

# The last line of a formatted traceback names the exception: "pkg.mod.Error: text",
# or "ValueError: text" for a builtin (Python leaves "builtins." out).
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


def exception_class_path(error: str, traceback: str | None) -> str:
    """The dotted path of the exception that ended an attempt, from what the worker stored."""
    lines = [line for line in (traceback or "").splitlines() if line and not line[0].isspace()]
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match and not line.startswith("Traceback"):
            return _qualified(match.group(1))
    match = _EXCEPTION_LINE.match(error)  # no traceback: Currant's own errors ("JobTimeout: ...")
    return _qualified(match.group(1)) if match else "builtins.Exception"


def _qualified(name: str) -> str:
    if "." in name:
        return name
    if name in ("JobTimeout", "JobCancelled", "Retry", "Discard"):
        return f"currant.{name}"
    return f"builtins.{name}"


def django_task(path: str, alias: str) -> Any:
    """The Django Task a job runs (its module path), bound to this backend; None if it is none."""
    try:
        found = import_string(path)
    except ImportError:
        return None  # no such module or attribute: the worker reports the job's task as unknown
    except Exception:  # whatever the module raises at import
        # A task module that raises at import must not take the worker's lane down
        # with it: its jobs fail as of an unknown task, and the cause is logged once
        # (the import is tried again each time, Python keeps no failed module).
        if path not in _unimportable:
            _unimportable.add(path)
            log.exception("task %s: its module raised on import; its jobs cannot run here", path)
        return None
    if not isinstance(found, compat.Task):
        return None
    return found if found.backend == alias else found.using(backend=alias)


def task_result(job: Job, task: Any, alias: str) -> Any:
    """The TaskResult of a job of a Django task."""
    errors = [
        compat.TaskError(
            exception_class_path=exception_class_path(str(entry.get("error") or ""), entry.get("traceback")),
            traceback=entry.get("traceback") or str(entry.get("error") or ""),
        )
        for entry in job.errors or []
    ]
    # Currant keeps the worker of the latest attempt only; earlier attempts' are unknown.
    last = str(job.worker_id) if job.worker_id is not None else "unknown"
    worker_ids = ["unknown"] * max(0, job.attempts - 1) + ([last] if job.attempts else [])
    result: Any = compat.TaskResult(
        task=task,
        id=str(job.id),
        status=STATUS_OF_STATE[job.state],
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        finished_at=job.finished_at if job.finished else None,
        last_attempted_at=job.started_at,
        args=list(job.args or ()),
        kwargs=dict(job.kwargs or {}),
        backend=alias,
        errors=errors,
        worker_ids=worker_ids,
    )
    if job.state == "succeeded":
        compat.set_return_value(result, job.result)
    return result
