"""A minimal Django project for Currant's Django backend tests.

The database is $CURRANT_DJANGO_DSN (the test run's database) and Currant's
schema is $CURRANT_SCHEMA, so a ``manage.py`` subprocess works on the very
schema its test made.
"""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ.get("CURRANT_DJANGO_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))

SECRET_KEY = "currant-tests-only"
USE_TZ = True
INSTALLED_APPS = ["currant.contrib.django"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", "postgres"),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
    },
}
# The same database with OPTIONS a worker must honour too (libpq's, and Django's
# own, which libpq would refuse).
DATABASES["with_options"] = {
    **DATABASES["default"],
    "OPTIONS": {
        "options": "-c currant_test.origin=django-options",
        "application_name": "currant-django-options",
        "server_side_binding": False,
        "prepare_threshold": 5,
    },
}


def tasks_setting(schema: str) -> dict[str, object]:
    return {
        "default": {
            "BACKEND": "currant.contrib.django.CurrantBackend",
            "QUEUES": ["default", "mail"],
            "OPTIONS": {"SCHEMA": schema},
        }
    }


TASKS = tasks_setting(os.environ.get("CURRANT_SCHEMA", "currant"))
