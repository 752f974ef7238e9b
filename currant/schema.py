"""Install and upgrade Currant's schema, as plans (see :mod:`currant.plans`).

Both run inside one transaction that the driver opens. :func:`migrate`
applies every missing migration and is idempotent and safe to run from
several processes at once: they queue on an advisory lock and the later ones
find nothing to do. :func:`ensure` only reads when the schema is current, so a
worker whose role cannot run DDL still starts against a migrated schema.
"""

from __future__ import annotations

import logging

from .plans import Plan
from .sql import migrations, queries, quote_schema

log = logging.getLogger("currant.schema")


def latest_version(schema: str) -> int:
    return migrations(schema)[-1].version


def current_version(schema: str) -> Plan:
    """The applied schema version, or None when Currant is not installed there."""
    sql = queries(schema)
    row = yield ("one", sql["migrations_installed"], {"table": f"{quote_schema(schema)}.migrations"})
    if row is None or not row[0]:
        return None
    versions = yield ("all", sql["migrations_applied"], None)
    return versions[-1][0] if versions else None


def ensure(schema: str) -> Plan:
    """Migrate only if the schema is behind; returns the versions applied."""
    if (yield from current_version(schema)) == latest_version(schema):
        return []
    return (yield from migrate(schema))


def migrate(schema: str) -> Plan:
    """Apply every missing migration; returns the versions applied."""
    sql = queries(schema)
    yield ("rowcount", sql["migration_lock"], {"key": f"currant.migrate:{schema}"})
    yield ("rowcount", f"CREATE SCHEMA IF NOT EXISTS {quote_schema(schema)}", None)
    yield ("rowcount", sql["migrations_table"], None)
    applied = {version for (version,) in (yield ("all", sql["migrations_applied"], None))}
    applied_now: list[int] = []
    for migration in migrations(schema):
        if migration.version in applied:
            continue
        log.info("applying migration %04d_%s to schema %s", migration.version, migration.name, schema)
        # As bytes: the file is several statements, sent as they are.
        yield ("rowcount", migration.text.encode(), None)
        yield ("rowcount", sql["migration_record"], {"version": migration.version, "name": migration.name})
        applied_now.append(migration.version)
    return applied_now
