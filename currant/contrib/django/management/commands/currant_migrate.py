"""``manage.py currant_migrate [--backend ALIAS]``: create or upgrade Currant's schema."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...backends import backend_named


class Command(BaseCommand):
    help = "Create or upgrade Currant's schema in the database of a Currant task backend (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backend", default="default", help="the TASKS alias of the Currant backend (default: default)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backend = backend_named(options["backend"], CommandError)
        applied = backend.app.migrate()
        schema = backend.app.schema
        if applied:
            self.stdout.write(f"Currant schema {schema!r}: applied migrations {', '.join(map(str, applied))}")
        else:
            self.stdout.write(f"Currant schema {schema!r}: up to date")
