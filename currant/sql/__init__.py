"""Currant's SQL, loaded from the ``.sql`` files beside this module.

``queries.sql`` holds every statement by name (``dashboard.sql``, the
dashboard's reads, loads the same way: ``queries(schema, "dashboard.sql")``); ``migrations/NNNN_name.sql``
hold the schema, applied in order by :mod:`currant.schema`. The only template
is ``{schema}``, replaced by a schema name that :func:`quote_schema` has
validated, so no value is ever interpolated into SQL text.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import NamedTuple

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}\Z")
_STATEMENT_HEADER = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)
_MIGRATION_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql\Z")


class Migration(NamedTuple):
    version: int
    name: str
    text: str


def quote_schema(schema: str) -> str:
    """Validate a schema name and return it quoted; raise ValueError otherwise."""
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
        raise ValueError(
            f"invalid schema name {schema!r}: use 1-48 lowercase letters, digits and"
            " underscores, not starting with a digit"
        )
    return f'"{schema}"'


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


@cache
def _raw_queries(file: str = "queries.sql") -> dict[str, str]:
    text = _read(file)
    parts = _STATEMENT_HEADER.split(text)
    queries: dict[str, str] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip()
    return queries


@cache
def queries(schema: str, file: str = "queries.sql") -> dict[str, str]:
    """Every named statement of ``file`` (beside this module) with ``{schema}`` filled in."""
    quoted = quote_schema(schema)
    return {name: body.replace("{schema}", quoted) for name, body in _raw_queries(file).items()}


@cache
def migrations(schema: str) -> tuple[Migration, ...]:
    """The migrations in version order, ``{schema}`` filled in."""
    quoted = quote_schema(schema)
    found = []
    for entry in resources.files(__name__).joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            text = entry.read_text(encoding="utf-8").replace("{schema}", quoted)
            found.append(Migration(int(match.group(1)), match.group(2), text))
    found.sort()
    return tuple(found)
