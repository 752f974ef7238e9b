"""A fresh database per benchmark run: dropped (connections and all) and created again."""

from __future__ import annotations

import psycopg
from psycopg import conninfo, sql


def fresh_database(dsn: str, name: str) -> str:
    """Drop ``name`` if it exists, create it empty; its DSN (``dsn`` with that database)."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return conninfo.make_conninfo(dsn, dbname=name)


def drop_database(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
