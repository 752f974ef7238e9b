# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled hot path of Currant: msgpack payloads and PostgreSQL binary formats.

Same names, signatures, output bytes and error messages as the pure-Python
twin :mod:`currant._core_py`, which is the readable spec. Division of labour:
this module does the per-byte / per-row work in C; every *error* message is
produced by calling the twin's helper for the failing value (a cold path), so
the two implementations cannot drift apart in what they say.

Timestamps are int64 microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL's
binary timestamptz); ``PG_EPOCH_US`` is that instant in Unix microseconds.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_Check
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_Check, PyUnicode_CheckExact
from libc.stdint cimport INT64_MAX, INT64_MIN, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy

import threading

import msgpack
from msgpack import unpackb as _unpackb

# Shared with the twin: the exception class (so `except PayloadError` works for
# both), the constants, and the cold-path helpers that raise/compose errors.
from currant._core_py import (
    COPY_HEADER,
    COPY_TRAILER,
    DEFAULT_MAX_SIZE,
    PG_EPOCH_US,
    PayloadError,
    _bytes_field,
    _check_int,
    _check_len,
    _has_timestamp,
    _reject_ext,
    _shape_failure,
    _text_field,
    _unpack_failure,
)

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

cdef extern from "Python.h":
    # Only ever called on exact/sub-class ints, for which it cannot fail.
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow)

cdef enum:
    INT2_MIN = -32768
    INT2_MAX = 32767
    INT4_MIN = -2147483648
    INT4_MAX = 2147483647
    INT8_OID = 20
    INT4_OID = 23

cdef Py_ssize_t _DEFAULT_MAX_SIZE = DEFAULT_MAX_SIZE


# --------------------------------------------------------------------------
# msgpack encoding
# --------------------------------------------------------------------------

# One reusable Packer per thread (a Packer's buffer is not thread-safe).
_tls = threading.local()


cdef bytes _pack(object obj):
    try:
        packer = _tls.packer
    except AttributeError:
        packer = _tls.packer = msgpack.Packer(
            autoreset=True, use_bin_type=True, strict_types=False, datetime=False
        )
    try:
        return packer.pack(obj)
    except (OverflowError, ValueError) as exc:
        raise TypeError(f"cannot encode as msgpack: {exc}") from exc


def pack_payload(args, kwargs):
    if type(args) is not list and type(args) is not tuple:
        if isinstance(args, (str, bytes, bytearray)):
            raise TypeError(f"args must be a list or tuple, not {type(args).__name__}")
        args = list(args)
    cdef dict kw
    if kwargs is None:
        kw = {}
    else:
        kw = kwargs if type(kwargs) is dict else dict(kwargs)
        for key in kw:
            if not PyUnicode_Check(key):
                raise TypeError(f"kwargs key {key!r} is not a str")
    return _pack([args, kw])


def pack_plain_args(items, Py_ssize_t max_size):
    """``pack_payload(item, None)`` for every item that is a plain args tuple
    (not an ``(args, kwargs)`` pair) and encodes within ``max_size``; None for
    every other item, which the caller encodes the careful way."""
    cdef list seq = items if type(items) is list else list(items)
    cdef Py_ssize_t n = len(seq), i
    cdef list out = [None] * n
    cdef tuple t
    cdef dict no_kwargs = {}
    try:
        packer = _tls.packer
    except AttributeError:
        _pack(None)
        packer = _tls.packer
    for i in range(n):
        item = seq[i]
        if type(item) is not tuple:
            continue
        t = <tuple>item
        if len(t) == 2 and isinstance(t[0], (tuple, list)) and isinstance(t[1], dict):
            continue
        try:
            packed = packer.pack([t, no_kwargs])
        except Exception:
            continue
        if PyBytes_GET_SIZE(packed) <= max_size:
            out[i] = packed
    return out


def pack_value(value):
    return _pack(value)


# --------------------------------------------------------------------------
# msgpack decoding (strict)
# --------------------------------------------------------------------------

cdef bint _maybe_timestamp(const unsigned char* p, Py_ssize_t n) noexcept:
    # A msgpack timestamp (ExtType -1, decoded by msgpack without ext_hook) is
    # always encoded as d6 ff, d7 ff or c7 0c ff; without those bytes the
    # decoded tree cannot contain one, so the tree walk is skipped.
    cdef Py_ssize_t i
    for i in range(1, n):
        if p[i] == 0xFF:
            if p[i - 1] == 0xD6 or p[i - 1] == 0xD7:
                return True
            if i >= 2 and p[i - 1] == 0x0C and p[i - 2] == 0xC7:
                return True
    return False


cdef object _unpack(object data, Py_ssize_t max_size):
    if type(data) is not bytes:
        if not isinstance(data, (bytearray, memoryview)):
            raise PayloadError(f"payload must be bytes, not {type(data).__name__}")
        data = bytes(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    if n > max_size:
        raise PayloadError(f"payload is {n} bytes, over the {max_size}-byte cap")
    try:
        # Limits bounded by the payload's own length defeat size bombs.
        value = _unpackb(
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
    if _maybe_timestamp(<const unsigned char*>PyBytes_AS_STRING(data), n) and _has_timestamp(value):
        raise PayloadError("msgpack ExtType -1 (timestamp) is not allowed")
    return value


cdef tuple _payload(object data, Py_ssize_t max_size):
    """Decode and shape-check a payload into (args_tuple, kwargs_dict)."""
    value = _unpack(data, max_size)
    if type(value) is list and len(<list>value) == 2:
        args = (<list>value)[0]
        kwargs = (<list>value)[1]
        if type(args) is list and type(kwargs) is dict:
            for key in <dict>kwargs:
                if not PyUnicode_CheckExact(key):
                    break
            else:
                return (tuple(<list>args), kwargs)
    raise _shape_failure(value)


def unpack_payload(data, Py_ssize_t max_size=_DEFAULT_MAX_SIZE):
    return _payload(data, max_size)


def unpack_value(data, Py_ssize_t max_size=_DEFAULT_MAX_SIZE):
    return _unpack(data, max_size)


def decode_claimed(rows, Py_ssize_t max_size=_DEFAULT_MAX_SIZE):
    cdef list out = []
    cdef tuple decoded
    for id_, attempt, task, payload in rows:
        try:
            decoded = _payload(payload, max_size)
        except PayloadError as exc:
            out.append((id_, attempt, task, None, None, str(exc)))
        else:
            out.append((id_, attempt, task, decoded[0], decoded[1], None))
    return out


# --------------------------------------------------------------------------
# PostgreSQL binary formats
# --------------------------------------------------------------------------

# Big-endian stores with explicit shifts: independent of host byte order.
cdef inline unsigned char* _be16(unsigned char* w, uint16_t v) noexcept:
    w[0] = <unsigned char>(v >> 8)
    w[1] = <unsigned char>v
    return w + 2


cdef inline unsigned char* _be32(unsigned char* w, uint32_t v) noexcept:
    w[0] = <unsigned char>(v >> 24)
    w[1] = <unsigned char>(v >> 16)
    w[2] = <unsigned char>(v >> 8)
    w[3] = <unsigned char>v
    return w + 4


cdef inline unsigned char* _be64(unsigned char* w, uint64_t v) noexcept:
    w = _be32(w, <uint32_t>(v >> 32))
    return _be32(w, <uint32_t>v)


cdef inline unsigned char* _field(unsigned char* w, const char* p, Py_ssize_t n) noexcept:
    """int32 length + bytes; n == -1 writes a NULL field."""
    w = _be32(w, <uint32_t>n)
    if n > 0:
        memcpy(w, p, n)
        w += n
    return w


cdef inline bint _fits(object value, long long lo, long long hi, long long* x) noexcept:
    cdef int overflow = 0
    if not PyLong_Check(value):
        return False
    x[0] = PyLong_AsLongLongAndOverflow(value, &overflow)
    return not overflow and lo <= x[0] <= hi


cdef long long _int(object value, str field, long long lo, long long hi, str pgtype) except? -1:
    cdef long long x = 0
    if _fits(value, lo, hi, &x):
        return x
    _check_int(field, value, lo, hi, pgtype)  # raises the twin's TypeError/OverflowError
    raise AssertionError("unreachable")


cdef const char* _text(object value, str field, Py_ssize_t* n) except NULL:
    """UTF-8 view of a str (cached inside the str object, valid while it lives)."""
    cdef const char* p = NULL
    if PyUnicode_Check(value):
        try:
            p = PyUnicode_AsUTF8AndSize(value, n)
        except UnicodeEncodeError:
            p = NULL
        if p != NULL and memchr(p, 0, n[0]) == NULL and n[0] <= INT4_MAX:
            return p
    _text_field(field, value)  # raises the twin's TypeError/ValueError
    raise AssertionError("unreachable")


cdef void _write_row(bytearray out, object row) except *:
    cdef tuple t = row if type(row) is tuple else tuple(row)
    if len(t) != 9:
        raise ValueError(f"expected 9 fields, got {len(t)}")
    cdef Py_ssize_t qn, tn, pn, sn, un = -1
    cdef const char* up = NULL
    # Validate every field (column order, like the twin) before touching `out`.
    cdef long long id_ = _int(t[0], "id", INT64_MIN, INT64_MAX, "int8")
    cdef const char* qp = _text(t[1], "queue", &qn)
    cdef const char* tp = _text(t[2], "task", &tn)
    payload = t[3]
    if type(payload) is not bytes:
        payload = _bytes_field("payload", payload)  # copies a buffer; TypeError otherwise
    pn = PyBytes_GET_SIZE(payload)
    if pn > INT4_MAX:
        _check_len("payload", pn)
    cdef long long priority = _int(t[4], "priority", INT2_MIN, INT2_MAX, "int2")
    # max_attempts NULL: the worker's task setting decides.
    cdef bint no_max = t[5] is None
    cdef long long max_attempts = 0 if no_max else _int(t[5], "max_attempts", INT4_MIN, INT4_MAX, "int4")
    cdef long long run_at = _int(t[6], "run_at", INT64_MIN, INT64_MAX, "int8")
    cdef const char* sp = _text(t[7], "state", &sn)
    if t[8] is not None:
        up = _text(t[8], "unique_key", &un)

    # field count + 9 length words + fixed-width values + variable data
    cdef Py_ssize_t size = 2 + 9 * 4 + 8 + qn + tn + pn + 2 + (0 if no_max else 4) + 8 + sn + (un if un > 0 else 0)
    cdef Py_ssize_t old = PyByteArray_GET_SIZE(out)
    PyByteArray_Resize(out, old + size)  # amortised growth, like bytearray +=
    cdef unsigned char* w = <unsigned char*>PyByteArray_AS_STRING(out) + old
    w = _be16(w, 9)
    w = _be64(_be32(w, 8), <uint64_t>id_)
    w = _field(w, qp, qn)
    w = _field(w, tp, tn)
    w = _field(w, PyBytes_AS_STRING(payload), pn)
    w = _be16(_be32(w, 2), <uint16_t>priority)
    if no_max:
        w = _be32(w, <uint32_t>-1)
    else:
        w = _be32(_be32(w, 4), <uint32_t>max_attempts)
    w = _be64(_be32(w, 8), <uint64_t>run_at)
    w = _field(w, sp, sn)
    _field(w, up, un)


def write_job_rows(out, rows):
    if not isinstance(out, bytearray):
        raise TypeError(f"out must be a bytearray, not {type(out).__name__}")
    cdef Py_ssize_t n0 = PyByteArray_GET_SIZE(out)
    cdef Py_ssize_t i = 0
    try:
        for row in rows:
            try:
                _write_row(out, row)
            except Exception as exc:
                exc.args = (f"row {i}: {exc}",)
                raise
            i += 1
    except BaseException:
        del out[n0:]
        raise
    return i


cdef bytes _int_array(values, uint32_t oid, int width, long long lo, long long hi, str pgtype):
    cdef list vals = values if type(values) is list else list(values)
    cdef Py_ssize_t n = len(vals), i
    cdef long long x = 0
    if n == 0:
        # How PostgreSQL sends '{}': ndim 0, has_null 0, element oid.
        empty = PyBytes_FromStringAndSize(NULL, 12)
        _be32(_be32(_be32(<unsigned char*>PyBytes_AS_STRING(empty), 0), 0), oid)
        return empty
    result = PyBytes_FromStringAndSize(NULL, 20 + n * (4 + width))
    cdef unsigned char* w = <unsigned char*>PyBytes_AS_STRING(result)
    w = _be32(_be32(_be32(_be32(_be32(w, 1), 0), oid), <uint32_t>n), 1)
    for i in range(n):
        v = vals[i]
        if not _fits(v, lo, hi, &x):
            _check_int(f"element {i}", v, lo, hi, pgtype)  # raises the twin's error
        w = _be32(w, width)
        w = _be64(w, <uint64_t>x) if width == 8 else _be32(w, <uint32_t>x)
    return result


def pack_int8_array(values):
    return _int_array(values, INT8_OID, 8, INT64_MIN, INT64_MAX, "int8")


def pack_int4_array(values):
    return _int_array(values, INT4_OID, 4, INT4_MIN, INT4_MAX, "int4")
