"""The worker process: ``python -m currant.worker MODULE:APP``."""

from .config import WorkerConfig
from .worker import Worker

__all__ = ["Worker", "WorkerConfig"]
