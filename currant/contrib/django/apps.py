"""The Django app: add ``"currant.contrib.django"`` to INSTALLED_APPS for the
``currant_worker`` and ``currant_migrate`` management commands."""

from __future__ import annotations

from django.apps import AppConfig


class CurrantConfig(AppConfig):
    name = "currant.contrib.django"
    label = "currant"
    verbose_name = "Currant"
