"""Currant as a backend of Django's task framework (``django.tasks``, DEP 14).

``"BACKEND": "currant.contrib.django.CurrantBackend"`` in ``TASKS`` (see
:mod:`currant.contrib.django.backend`), and ``"currant.contrib.django"`` in
INSTALLED_APPS for ``manage.py currant_worker`` and ``manage.py currant_migrate``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CurrantBackend"]


def __getattr__(name: str) -> Any:
    # Lazy: INSTALLED_APPS imports this package while Django is still loading
    # its apps; the backend (and Django's task framework) load at first use.
    if name == "CurrantBackend":
        from .backend import CurrantBackend

        return CurrantBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
