"""Finding a Currant backend among Django's task backends (for the management commands)."""

from __future__ import annotations

from typing import Any

from . import compat
from .backend import CurrantBackend


def backend_named(alias: str, error: type[Exception]) -> CurrantBackend:
    """The Currant backend configured under ``TASKS[alias]``; ``error`` names what is wrong."""
    if alias not in compat.task_backends.settings:
        raise error(f"no task backend {alias!r} in TASKS")
    try:
        backend: Any = compat.task_backends[alias]
    except Exception as exc:  # a misconfigured backend raises anything
        # Configured but broken (a bad OPTION, an unimportable BACKEND): say why.
        raise error(f"could not load task backend {alias!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(backend, CurrantBackend):
        raise error(f"TASKS[{alias!r}] is {type(backend).__name__}, not currant.contrib.django.CurrantBackend")
    return backend
