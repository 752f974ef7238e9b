"""Pure-Python twin of :mod:`currant._core`: the readable spec and the test oracle.

Everything here is bytes in, bytes out: no policy, no I/O, no database. The
compiled module ``currant._core`` exposes the same names with the same
signatures and produces byte-identical output (and identical error messages);
the unit tests run every case against both.

Conventions
-----------
* Payloads and results are msgpack (``use_bin_type=True``, no ExtTypes, no
  timestamps). A job payload is the 2-array ``[args, kwargs]``.
* Timestamps are int64 **microseconds since 2000-01-01 00:00:00 UTC**, which is
  PostgreSQL's binary ``timestamptz``. ``PG_EPOCH_US`` is that instant in Unix
  microseconds, so ``pg_us = unix_us - PG_EPOCH_US``.
* COPY rows use PostgreSQL's binary COPY format; arrays use the binary array
  format (what ``array_send`` produces). All integers are big-endian.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack  # msgpack ships no type information
from msgpack.exceptions import ExtraData, FormatError, StackError

__all__ = [
    "COPY_HEADER",
    "COPY_TRAILER",
    "PG_EPOCH_US",
    "PayloadError",
    "decode_claimed",
    "pack_int4_array",
    "pack_int8_array",
    "pack_payload",
    "pack_value",
    "unpack_payload",
    "unpack_value",
    "write_job_rows",
    "pack_plain_args",
]

#: 2000-01-01 00:00:00 UTC in Unix microseconds (PostgreSQL's timestamp epoch).
PG_EPOCH_US: int = 946_684_800_000_000

#: Binary COPY signature + int32 flags (0) + int32 header-extension length (0).
COPY_HEADER: bytes = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
#: Binary COPY end-of-data marker: int16 field count -1.
COPY_TRAILER: bytes = b"\xff\xff"

DEFAULT_MAX_SIZE: int = 1 << 20

INT2_MIN, INT2_MAX = -(1 << 15), (1 << 15) - 1
INT4_MIN, INT4_MAX = -(1 << 31), (1 << 31) - 1
INT8_MIN, INT8_MAX = -(1 << 63), (1 << 63) - 1

#: What the decoders accept (psycopg may hand bytea over as memoryview).
BytesLike = bytes | bytearray | memoryview

INT8_OID = 20
INT4_OID = 23


class PayloadError(ValueError):
    """A stored payload/result is not a well-formed Currant msgpack value.

    ``str(exc)`` is a human-readable reason, suitable for recording on the job.
    ``currant._core`` raises this very class, so ``except PayloadError`` works
    whichever implementation is active.
    """


# --------------------------------------------------------------------------
# msgpack encoding
# --------------------------------------------------------------------------

# One Packer per thread: reusing a Packer avoids re-allocating its buffer on
# every call, but a Packer is not safe to share between threads (its buffer is
# mutable state, and packing a dict subclass runs Python code mid-pack).
_tls = threading.local()


def _packer() -> msgpack.Packer:
    try:
        return _tls.packer
    except AttributeError:
        packer = _tls.packer = msgpack.Packer(
            autoreset=True, use_bin_type=True, strict_types=False, datetime=False
        )
        return packer


def _pack(obj: Any) -> bytes:
    try:
        return _packer().pack(obj)  # type: ignore[no-any-return]
    except (OverflowError, ValueError) as exc:
        # msgpack reports ints beyond 64 bits as OverflowError and cycles /
        # over-deep nesting as ValueError; to callers they are all "this value
        # cannot be encoded", which is TypeError (like unsupported types).
        raise TypeError(f"cannot encode as msgpack: {exc}") from exc


def pack_payload(args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> bytes:
    """msgpack of ``[list(args), dict(kwargs or {})]``.

    Raises ``TypeError`` for values msgpack cannot encode and for non-str
    kwargs keys.
    """
    if type(args) is not list and type(args) is not tuple:
        if isinstance(args, (str, bytes, bytearray)):
            raise TypeError(f"args must be a list or tuple, not {type(args).__name__}")
        args = list(args)
    if kwargs is None:
        kw: dict[str, Any] = {}
    else:
        kw = kwargs if type(kwargs) is dict else dict(kwargs)
        for key in kw:
            if not isinstance(key, str):
                raise TypeError(f"kwargs key {key!r} is not a str")
    return _pack([args, kw])


def pack_plain_args(items: Iterable[Any], max_size: int) -> list[bytes | None]:
    """``pack_payload(item, None)`` for every item that is a plain args tuple
    (not an ``(args, kwargs)`` pair) and encodes within ``max_size``; None for
    every other item, which the caller encodes the careful way."""
    out: list[bytes | None] = []
    for item in items:
        packed = None
        if type(item) is tuple and not (
            len(item) == 2 and isinstance(item[0], (tuple, list)) and isinstance(item[1], dict)
        ):
            try:
                packed = _pack([item, {}])
            except Exception:  # noqa: BLE001 - the careful path reports it
                packed = None
            if packed is not None and len(packed) > max_size:
                packed = None
        out.append(packed)
    return out


def pack_value(value: Any) -> bytes:
    """msgpack of a single value (task results). ``TypeError`` if unencodable."""
    return _pack(value)


# --------------------------------------------------------------------------
# msgpack decoding (strict)
# --------------------------------------------------------------------------

# A msgpack timestamp is ExtType -1, which msgpack decodes itself without
# calling ext_hook. Every encoding of it contains one of these byte sequences
# (fixext4/fixext8/ext8-len-12 followed by type 0xff), so data without them
# cannot hold a timestamp and needs no tree walk.
_TIMESTAMP_MARKERS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def _reject_ext(code: int, data: bytes) -> Any:
    raise PayloadError(f"msgpack ExtType {code} is not allowed")


def _unpack_failure(exc: BaseException) -> PayloadError:
    """Translate an exception from ``msgpack.unpackb`` into a PayloadError."""
    if isinstance(exc, PayloadError):
        return exc
    if isinstance(exc, ExtraData):
        return PayloadError(f"{len(exc.extra)} bytes of trailing data after the msgpack value")
    if isinstance(exc, (StackError, RecursionError)):
        return PayloadError("nesting deeper than msgpack allows")
    if isinstance(exc, FormatError):
        return PayloadError("invalid msgpack: reserved or malformed type byte")
    if isinstance(exc, UnicodeDecodeError):
        return PayloadError(f"invalid UTF-8 in a string at byte {exc.start}: {exc.reason}")
    msg = str(exc)
    if "incomplete input" in msg:
        return PayloadError("truncated msgpack data")
    if "exceeds max_" in msg:
        # The limits are the payload's own length, so a header claiming more
        # items/bytes than that can only be truncated data or a size bomb.
        return PayloadError(f"truncated msgpack data: a length header claims more than the payload holds ({msg})")
    return PayloadError(f"invalid msgpack: {msg}")


def _has_timestamp(value: Any) -> bool:
    """Whether a decoded value contains a msgpack Timestamp (iterative walk)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(item)
        elif type(item) is dict:
            stack.extend(item.values())  # keys are str/bytes (strict_map_key)
        elif type(item) is msgpack.Timestamp:
            return True
    return False


def _unpack(data: BytesLike, max_size: int) -> Any:
    if type(data) is not bytes:
        if not isinstance(data, (bytearray, memoryview)):
            raise PayloadError(f"payload must be bytes, not {type(data).__name__}")
        data = bytes(data)
    n = len(data)
    if n > max_size:
        raise PayloadError(f"payload is {n} bytes, over the {max_size}-byte cap")
    try:
        # Every limit is bounded by the payload length (an element takes at
        # least one byte, a map entry two), so a header claiming a 4 GiB
        # container fails before anything is allocated.
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_reject_ext,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n // 2,
            max_ext_len=n,
        )
    except (ValueError, RecursionError, msgpack.UnpackException) as exc:
        raise _unpack_failure(exc) from None
    if (
        _TIMESTAMP_MARKERS[0] in data or _TIMESTAMP_MARKERS[1] in data or _TIMESTAMP_MARKERS[2] in data
    ) and _has_timestamp(value):
        raise PayloadError("msgpack ExtType -1 (timestamp) is not allowed")
    return value


def _shape_failure(value: Any) -> PayloadError | None:
    """Why a decoded value is not ``[args: list, kwargs: dict[str, Any]]`` (None if it is)."""
    if type(value) is not list:
        return PayloadError(f"top level must be a 2-element array [args, kwargs], not {type(value).__name__}")
    if len(value) != 2:
        return PayloadError(f"top level must be a 2-element array [args, kwargs], not an array of {len(value)}")
    args, kwargs = value
    if type(args) is not list:
        return PayloadError(f"args must be an array, not {type(args).__name__}")
    if type(kwargs) is not dict:
        return PayloadError(f"kwargs must be a map, not {type(kwargs).__name__}")
    for key in kwargs:
        if type(key) is not str:
            return PayloadError(f"kwargs keys must be str, not {type(key).__name__} ({key!r})")
    return None


def unpack_payload(data: BytesLike, max_size: int = DEFAULT_MAX_SIZE) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Strictly decode a job payload into ``(args, kwargs)``.

    Raises :class:`PayloadError` (and nothing else) for any malformed input.
    """
    value = _unpack(data, max_size)
    failure = _shape_failure(value)
    if failure is not None:
        raise failure
    return tuple(value[0]), value[1]


def unpack_value(data: BytesLike, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Strictly decode a single msgpack value (as strict as unpack_payload, no shape check)."""
    return _unpack(data, max_size)


def decode_claimed(
    rows: Iterable[tuple[int, int, str, BytesLike]], max_size: int = DEFAULT_MAX_SIZE
) -> list[tuple[int, int, str, tuple[Any, ...] | None, dict[str, Any] | None, str | None]]:
    """Decode claimed ``(id, attempt, task, payload)`` rows.

    Each output row is ``(id, attempt, task, args, kwargs, None)``, or
    ``(id, attempt, task, None, None, reason)`` when the payload is malformed.
    A bad payload never raises and never affects the other rows.
    """
    out: list[tuple[int, int, str, tuple[Any, ...] | None, dict[str, Any] | None, str | None]] = []
    for id_, attempt, task, payload in rows:
        try:
            args, kwargs = unpack_payload(payload, max_size)
        except PayloadError as exc:
            out.append((id_, attempt, task, None, None, str(exc)))
        else:
            out.append((id_, attempt, task, args, kwargs, None))
    return out


# --------------------------------------------------------------------------
# PostgreSQL binary formats
# --------------------------------------------------------------------------

_NULL_FIELD = b"\xff\xff\xff\xff"  # int32 length -1
_ROW_HEAD = struct.pack("!h", 9)  # field count
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


def _bytes_field(field: str, value: Any) -> bytes:
    try:
        return memoryview(value).tobytes()
    except TypeError:
        raise TypeError(f"{field} must be bytes-like, not {type(value).__name__}") from None


def _encode_row(row: Any) -> bytes:
    if type(row) is not tuple:
        row = tuple(row)
    if len(row) != 9:
        raise ValueError(f"expected 9 fields, got {len(row)}")
    id_, queue, task, payload, priority, max_attempts, run_at, state, unique_key = row
    parts = [_ROW_HEAD, _INT8_FIELD.pack(8, _check_int("id", id_, INT8_MIN, INT8_MAX, "int8"))]
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
    rows: Iterable[tuple[int, str, str, BytesLike, int, int | None, int, str, str | None]],
) -> int:
    """Append binary COPY tuples (no header/trailer) for the job columns.

    Columns: ``(id int8, queue text, task text, payload bytea, priority int2,
    max_attempts int4 NULL, run_at timestamptz, state text-label, unique_key text NULL)``;
    ``run_at`` is already int64 microseconds since 2000-01-01 UTC.

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
