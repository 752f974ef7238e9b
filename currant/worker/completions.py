"""Turning finished attempts into the parameters of the batched completion statements.

The common case, a job that returned None, goes to ``complete_succeeded`` as
two binary arrays built by the core (ids and attempts). Everything else goes
to ``complete_outcomes`` with one array per column.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.adapt import Buffer, Dumper
from psycopg.pq import Format

from .. import codec
from .lanes import Outcome

_INT8_ARRAY_OID = 1016
_INT4_ARRAY_OID = 1007


class Int8Array(bytes):
    """A bigint[] already in PostgreSQL's binary array format (built by the core)."""


class Int4Array(bytes):
    """An integer[] already in PostgreSQL's binary array format (built by the core)."""


class _Int8ArrayDumper(Dumper):
    format = Format.BINARY
    oid = _INT8_ARRAY_OID

    def dump(self, obj: Any) -> Buffer:
        return obj  # type: ignore[no-any-return]


class _Int4ArrayDumper(Dumper):
    format = Format.BINARY
    oid = _INT4_ARRAY_OID

    def dump(self, obj: Any) -> Buffer:
        return obj  # type: ignore[no-any-return]


def register_array_dumpers(conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> None:
    conn.adapters.register_dumper(Int8Array, _Int8ArrayDumper)
    conn.adapters.register_dumper(Int4Array, _Int4ArrayDumper)


def id_arrays(pairs: Iterable[tuple[int, int]]) -> tuple[Int8Array, Int4Array]:
    ids: list[int] = []
    attempts: list[int] = []
    for job_id, attempt in pairs:
        ids.append(job_id)
        attempts.append(attempt)
    return Int8Array(codec.pack_int8_array(ids)), Int4Array(codec.pack_int4_array(attempts))


def completion_params(
    finished: list[tuple[int, int, Outcome | None]], worker: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(params of complete_succeeded or None, params of complete_outcomes or None)."""
    plain: list[tuple[int, int]] = []
    other: list[tuple[int, int, Outcome]] = []
    for job_id, attempt, outcome in finished:
        if outcome is None:
            plain.append((job_id, attempt))
        else:
            other.append((job_id, attempt, outcome))
    fast = None
    if plain:
        ids, attempts = id_arrays(plain)
        fast = {"ids": ids, "attempts": attempts, "worker": worker}
    general = None
    if other:
        ids, attempts = id_arrays((job_id, attempt) for job_id, attempt, _ in other)
        general = {
            "ids": ids,
            "attempts": attempts,
            "kinds": [o.kind for _, _, o in other],
            "results": [o.result for _, _, o in other],
            "errors": [o.error for _, _, o in other],
            "tracebacks": [o.traceback for _, _, o in other],
            "delays": [o.delay for _, _, o in other],
            "max_attempts": [o.max_attempts for _, _, o in other],
            "worker": worker,
        }
    return fast, general
