"""Pure-Python twin of :mod:`currant._core`: the readable spec and the test oracle.

Everything here is bytes in, bytes out: no policy, no I/O, no database. The
compiled module ``currant._core`` exposes the same names with the same
signatures and produces byte-identical output (and identical error messages);
the unit tests run every case against both.

The core does two kinds of byte work:

* PostgreSQL's binary formats: COPY rows for bulk enqueue and the id/attempt
  arrays of batched completion. Integers are big-endian; timestamps are int64
  **microseconds since 2000-01-01 00:00:00 UTC** (binary ``timestamptz``), so
  ``pg_us = unix_us - PG_EPOCH_US``.
* ``pack_plain_args``, bulk enqueue's msgpack encoding of plain args tuples.
  Here it is :func:`currant.payload.pack_plain_args` itself (msgpack's Packer
  with Currant's settings); the compiled core writes the same bytes in C for
  the common value types and leaves every other item to the careful path.

What a payload is, and every msgpack rule, lives in :mod:`currant.payload`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from .payload import pack_plain_args

__all__ = [
    "COPY_HEADER",
    "COPY_TRAILER",
    "PG_EPOCH_US",
    "pack_int4_array",
    "pack_int8_array",
    "pack_plain_args",
    "write_job_rows",
]

#: 2000-01-01 00:00:00 UTC in Unix microseconds (PostgreSQL's timestamp epoch).
PG_EPOCH_US: int = 946_684_800_000_000

#: Binary COPY signature + int32 flags (0) + int32 header-extension length (0).
COPY_HEADER: bytes = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
#: Binary COPY end-of-data marker: int16 field count -1.
COPY_TRAILER: bytes = b"\xff\xff"

INT2_MIN, INT2_MAX = -(1 << 15), (1 << 15) - 1
INT4_MIN, INT4_MAX = -(1 << 31), (1 << 31) - 1
INT8_MIN, INT8_MAX = -(1 << 63), (1 << 63) - 1

#: What the writers accept as a payload (psycopg may hand bytea over as memoryview).
BytesLike = bytes | bytearray | memoryview

INT8_OID = 20
INT4_OID = 23


# --------------------------------------------------------------------------
# PostgreSQL binary formats
# --------------------------------------------------------------------------

_NULL_FIELD = b"\xff\xff\xff\xff"  # int32 length -1
_ROW_HEADS = {8: struct.pack("!h", 8), 9: struct.pack("!h", 9)}  # field count: without or with the id
_LEN = struct.Struct("!i")
_INT8_FIELD = struct.Struct("!iq")
_INT4_FIELD = struct.Struct("!ii")
_INT2_FIELD = struct.Struct("!ih")
_MAX_FIELD_LEN = INT4_MAX


def _check_int(field: str, value: Any, lo: int, hi: int, pgtype: str) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{field} must be int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise OverflowError(f"{field} value {value} is out of {pgtype} range {lo}..{hi}")
    return value


def _check_len(field: str, n: int) -> None:
    if n > _MAX_FIELD_LEN:
        raise ValueError(f"{field} is {n} bytes, too large for one field")


def _text_field(field: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be str, not {type(value).__name__}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{field} cannot be encoded as UTF-8: {exc.reason}") from None
    if b"\x00" in raw:
        raise ValueError(f"{field} contains a NUL character, which PostgreSQL text cannot hold")
    _check_len(field, len(raw))
    return _LEN.pack(len(raw)) + raw


# A job's COPY row, without or with its id first (write_job_rows).
JobRow = (
    tuple[str, str, BytesLike, int, int | None, int, str, str | None]
    | tuple[int, str, str, BytesLike, int, int | None, int, str, str | None]
)


def _bytes_field(field: str, value: Any) -> bytes:
    try:
        return memoryview(value).tobytes()
    except TypeError:
        raise TypeError(f"{field} must be bytes-like, not {type(value).__name__}") from None


def _encode_row(row: Any) -> bytes:
    if type(row) is not tuple:
        row = tuple(row)
    if len(row) == 9:
        parts = [_ROW_HEADS[9], _INT8_FIELD.pack(8, _check_int("id", row[0], INT8_MIN, INT8_MAX, "int8"))]
        row = row[1:]
    elif len(row) == 8:
        parts = [_ROW_HEADS[8]]
    else:
        raise ValueError(f"expected 8 or 9 fields, got {len(row)}")
    queue, task, payload, priority, max_attempts, run_at, state, unique_key = row
    parts.append(_text_field("queue", queue))
    parts.append(_text_field("task", task))
    if type(payload) is not bytes:
        payload = _bytes_field("payload", payload)
    _check_len("payload", len(payload))
    parts.append(_LEN.pack(len(payload)))
    parts.append(payload)
    parts.append(_INT2_FIELD.pack(2, _check_int("priority", priority, INT2_MIN, INT2_MAX, "int2")))
    if max_attempts is None:  # NULL: the worker's task setting decides
        parts.append(_NULL_FIELD)
    else:
        parts.append(_INT4_FIELD.pack(4, _check_int("max_attempts", max_attempts, INT4_MIN, INT4_MAX, "int4")))
    parts.append(_INT8_FIELD.pack(8, _check_int("run_at", run_at, INT8_MIN, INT8_MAX, "int8")))
    parts.append(_text_field("state", state))
    parts.append(_NULL_FIELD if unique_key is None else _text_field("unique_key", unique_key))
    return b"".join(parts)


def write_job_rows(
    out: bytearray,
    rows: Iterable[JobRow],
) -> int:
    """Append binary COPY tuples (no header/trailer) for the job columns.

    Columns: ``([id int8,] queue text, task text, payload bytea, priority int2,
    max_attempts int4 NULL, run_at timestamptz, state text-label, unique_key text NULL)``;
    a row of 8 fields has no id (the table's identity default draws it), a
    row of 9 starts with it; one stream holds rows of one kind (the COPY's
    column list says which). ``run_at`` is already int64 microseconds since
    2000-01-01 UTC.

    On any error, ``out`` is restored to its length on entry and the
    exception is re-raised with its message prefixed by ``"row {index}: "``.
    Returns the number of rows written.
    """
    if not isinstance(out, bytearray):
        raise TypeError(f"out must be a bytearray, not {type(out).__name__}")
    n0 = len(out)
    i = 0
    try:
        for row in rows:
            try:
                out += _encode_row(row)
            except Exception as exc:
                exc.args = (f"row {i}: {exc}",)
                raise
            i += 1
    except BaseException:
        del out[n0:]
        raise
    return i


def _pack_int_array(values: Iterable[int], oid: int, elem: struct.Struct, lo: int, hi: int, pgtype: str) -> bytes:
    values = list(values)
    if not values:
        # How PostgreSQL sends '{}': ndim 0, has_null 0, element oid, nothing more.
        return struct.pack("!iii", 0, 0, oid)
    width = elem.size - 4
    parts = [struct.pack("!iiiii", 1, 0, oid, len(values), 1)]
    for i, value in enumerate(values):
        parts.append(elem.pack(width, _check_int(f"element {i}", value, lo, hi, pgtype)))
    return b"".join(parts)


def pack_int8_array(values: Iterable[int]) -> bytes:
    """PostgreSQL binary ``int8[]`` (1-D, lower bound 1, no NULLs)."""
    return _pack_int_array(values, INT8_OID, _INT8_FIELD, INT8_MIN, INT8_MAX, "int8")


def pack_int4_array(values: Iterable[int]) -> bytes:
    """PostgreSQL binary ``int4[]`` (1-D, lower bound 1, no NULLs)."""
    return _pack_int_array(values, INT4_OID, _INT4_FIELD, INT4_MIN, INT4_MAX, "int4")
