"""Install and upgrade Currant's schema. Nothing else."""

from __future__ import annotations

import logging

import psycopg

from .sql import migrations, queries, quote_schema

log = logging.getLogger("currant.schema")


def latest_version(schema: str) -> int:
    return migrations(schema)[-1].version


def current_version(conn: psycopg.Connection, schema: str) -> int | None:
    """The applied schema version, or None when Currant is not installed there."""
    sql = queries(schema)
    row = conn.execute(sql["migrations_installed"], {"table": f"{quote_schema(schema)}.migrations"}).fetchone()
    if row is None or not row[0]:
        return None
    versions = [version for (version,) in conn.execute(sql["migrations_applied"])]
    return versions[-1] if versions else None


def migrate(conn: psycopg.Connection, schema: str) -> list[int]:
    """Apply every missing migration in one transaction; returns the versions applied.

    Idempotent, and safe to run from several processes at once: they queue on
    an advisory lock and the later ones find nothing to do.
    """
    sql = queries(schema)
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute(sql["migration_lock"], {"key": f"currant.migrate:{schema}"})
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_schema(schema)}")
        conn.execute(sql["migrations_table"])
        applied = {version for (version,) in conn.execute(sql["migrations_applied"])}
        for migration in migrations(schema):
            if migration.version in applied:
                continue
            log.info("applying migration %04d_%s to schema %s", migration.version, migration.name, schema)
            conn.execute(migration.text.encode())
            conn.execute(sql["migration_record"], {"version": migration.version, "name": migration.name})
            applied_now.append(migration.version)
    return applied_now
