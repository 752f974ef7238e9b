"""Currant: a fast, durable PostgreSQL job queue with a Cython hot path."""

from ._impl import __impl__
from ._version import __version__
from .app import App
from .errors import (
    ConfigurationError,
    CurrantError,
    DatabaseUnavailable,
    Discard,
    EnqueueOutcomeUnknown,
    JobCancelled,
    JobTimeout,
    PayloadTooLarge,
    Retry,
    UnknownTask,
)
from .flow import Call, Group
from .job import Item, Job, JobContext, current_job
from .task import Task, exponential_backoff

__all__ = [
    "App",
    "Call",
    "ConfigurationError",
    "CurrantError",
    "DatabaseUnavailable",
    "Discard",
    "EnqueueOutcomeUnknown",
    "Group",
    "Item",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobTimeout",
    "PayloadTooLarge",
    "Retry",
    "Task",
    "UnknownTask",
    "__impl__",
    "__version__",
    "current_job",
    "exponential_backoff",
]
