"""``manage.py currant_worker [--backend ALIAS] [the worker's options]``: a Currant
worker with Django set up, running the Django tasks of a Currant task backend.

Every option of ``python -m currant.worker`` works (``--burst``,
``--concurrency``, ...), but ``--processes`` (start several commands
instead). ``--queues`` defaults to the backend's QUEUES, in their order
(``["default"]`` when QUEUES is empty, which allows any queue: say which).
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from currant import cli

from ...backends import backend_named

_DJANGO_OPTIONS = ("--settings", "--pythonpath")


class Command(BaseCommand):
    help = "Run a Currant worker for a Currant task backend; the options are the worker's (see --help)."

    def run_from_argv(self, argv: list[str]) -> None:
        # The worker's own parser reads the options, so both commands take the
        # same ones; Django's options were applied by manage.py already.
        rest = _without_django_options(argv[2:])
        alias = "default"
        if "--backend" in rest:
            index = rest.index("--backend")
            if index + 1 >= len(rest):
                raise SystemExit("manage.py currant_worker: error: --backend needs a TASKS alias")
            alias = rest[index + 1]
            del rest[index : index + 2]
        try:
            backend = backend_named(alias, CommandError)
        except CommandError as exc:
            sys.stderr.write(f"manage.py currant_worker: error: {exc}\n")
            raise SystemExit(2) from None
        app = backend.app
        app.add_hook(CloseOldConnections())
        code = cli.main(rest, app=app, prog="manage.py currant_worker", queues=backend.queue_order)
        raise SystemExit(code)

    def handle(self, *args: Any, **options: Any) -> None:
        raise CommandError("run it as `manage.py currant_worker [options]` (call_command is not supported)")


class CloseOldConnections:
    """Django's request cycle, around each job: a job never inherits a broken or
    expired database connection, and leaves none open past CONN_MAX_AGE."""

    def before_job(self, job: Any) -> None:
        from django.db import close_old_connections

        close_old_connections()

    def after_job(self, job: Any, outcome: Any) -> None:
        from django.db import close_old_connections

        close_old_connections()


def _without_django_options(args: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in _DJANGO_OPTIONS)):
            kept.append(arg)
    return kept
