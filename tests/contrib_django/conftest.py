"""Django set up once per test process on the run's database; each test's
backend points at the test's own schema (``override_settings(TASKS=...)``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def django_ready(database_dsn: str) -> None:
    os.environ["CURRANT_DJANGO_DSN"] = database_dsn
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.contrib_django.settings")
    import django

    django.setup()


@pytest.fixture
def backend(django_ready: None, schema_name: str) -> Iterator[Any]:
    """The Currant backend of TASKS['default'], on this test's schema (migrated)."""
    from django.db import connections
    from django.test import override_settings

    from currant.contrib.django.compat import task_backends
    from tests.contrib_django.settings import tasks_setting

    with override_settings(TASKS=tasks_setting(schema_name)):
        instance = task_backends["default"]
        instance.app.migrate()
        yield instance
        instance.app.close()
    connections.close_all()
