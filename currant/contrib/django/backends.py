"""Finding a Currant backend among Django's task backends (for the management commands)."""

from __future__ import annotations

from typing import Any

from . import compat
from .backend import CurrantBackend


def backend_named(alias: str, error: type[Exception]) -> CurrantBackend:
    """The Currant backend configured under ``TASKS[alias]``; ``error`` names what is wrong."""
    try:
        backend: Any = compat.task_backends[alias]
    except Exception as exc:  # noqa: BLE001 - Django raises a different class per version
        raise error(f"no task backend {alias!r} in TASKS ({exc})") from None
    if not isinstance(backend, CurrantBackend):
        raise error(f"TASKS[{alias!r}] is {type(backend).__name__}, not currant.contrib.django.CurrantBackend")
    return backend
