"""The worker process: ``python -m currant.worker MODULE:APP``."""

from .loop import Worker, WorkerConfig

__all__ = ["Worker", "WorkerConfig"]
