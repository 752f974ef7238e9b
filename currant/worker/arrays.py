"""Binary id and attempt arrays for the batched statements (completion, release).

The core writes them in PostgreSQL's binary array format; these wrappers tell
psycopg to send the bytes as they are, with no per-element adaptation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.adapt import Buffer, Dumper
from psycopg.pq import Format

from .. import codec

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


def int8_array(values: list[int]) -> Int8Array:
    return Int8Array(codec.pack_int8_array(values))


def id_arrays(pairs: Iterable[tuple[int, int]]) -> tuple[Int8Array, Int4Array]:
    ids: list[int] = []
    attempts: list[int] = []
    for job_id, attempt in pairs:
        ids.append(job_id)
        attempts.append(attempt)
    return Int8Array(codec.pack_int8_array(ids)), Int4Array(codec.pack_int4_array(attempts))
