# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled core of Currant: bytes in, bytes out, in C.

Same names, signatures, output bytes and error messages as the pure-Python
twin :mod:`currant._core_py`, which is the readable spec. Every *error*
message comes from the twin's helper for the failing value (a cold path), so
the two cannot drift apart in what they say.

Two kinds of byte work:

* PostgreSQL's binary formats (``_core_pg.pxi``, included below): COPY rows
  and int8/int4 arrays. Timestamps are int64 microseconds since 2000-01-01
  00:00:00 UTC (binary timestamptz).
* ``pack_plain_args``: bulk enqueue's msgpack encoding of plain args tuples,
  written here directly for the common value types (None, bool, int, float,
  str, bytes, and tuples, lists and dicts of them), byte for byte what
  :mod:`currant.payload`'s Packer writes. An item holding anything else comes
  back None, and the caller encodes it the careful way; so no msgpack rule
  lives here, only msgpack's byte layout.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_Check
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_Check
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy

# Shared with the twin: the constants and the cold-path helpers that raise.
from currant._core_py import (
    COPY_HEADER,
    COPY_TRAILER,
    PG_EPOCH_US,
    _bytes_field,
    _check_int,
    _check_len,
    _text_field,
)

__all__ = [
    "COPY_HEADER",
    "COPY_TRAILER",
    "PG_EPOCH_US",
    "pack_int4_array",
    "pack_int8_array",
    "pack_plain_args",
    "write_job_rows",
]

cdef extern from "Python.h":
    # Only ever called on exact/sub-class ints, for which it cannot fail.
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow)
    unsigned long long PyLong_AsUnsignedLongLong(object obj) except? <unsigned long long>-1

cdef enum:
    INT2_MIN = -32768
    INT2_MAX = 32767
    INT4_MIN = -2147483648
    INT4_MAX = 2147483647
    INT8_OID = 20
    INT4_OID = 23
    # Deeper than this, an item goes the careful way (msgpack's own limit is 511).
    MAX_DEPTH = 100


# --------------------------------------------------------------------------
# msgpack byte layout (the common value types only)
# --------------------------------------------------------------------------

cdef struct _Buf:
    unsigned char* data
    Py_ssize_t length
    Py_ssize_t capacity


cdef int _reserve(_Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t want = b.length + extra
    cdef Py_ssize_t capacity = b.capacity
    cdef unsigned char* grown
    if want <= capacity:
        return 0
    while capacity < want:
        capacity *= 2
    grown = <unsigned char*>PyMem_Realloc(b.data, capacity)
    if grown == NULL:
        raise MemoryError()
    b.data = grown
    b.capacity = capacity
    return 0


cdef inline int _put_byte(_Buf* b, unsigned char value) except -1:
    _reserve(b, 1)
    b.data[b.length] = value
    b.length += 1
    return 0


cdef inline int _put_be(_Buf* b, unsigned char head, uint64_t value, int width) except -1:
    """A type byte followed by ``value`` in ``width`` big-endian bytes."""
    cdef int i
    _reserve(b, 1 + width)
    b.data[b.length] = head
    for i in range(width):
        b.data[b.length + 1 + i] = <unsigned char>(value >> (8 * (width - 1 - i)))
    b.length += 1 + width
    return 0


cdef int _put_header(_Buf* b, Py_ssize_t n, unsigned char fix, Py_ssize_t fix_limit,
                     unsigned char h8, unsigned char h16, unsigned char h32) except -1:
    """A length header: fix form below fix_limit, else the 8-, 16- or 32-bit form
    (h8 == 0: no 8-bit form, as for arrays and maps)."""
    if n < fix_limit:
        return _put_byte(b, fix | <unsigned char>n)
    if h8 and n < 0x100:
        return _put_be(b, h8, n, 1)
    if n < 0x10000:
        return _put_be(b, h16, n, 2)
    return _put_be(b, h32, n, 4)


cdef int _put_raw(_Buf* b, const char* p, Py_ssize_t n) except -1:
    _reserve(b, n)
    memcpy(b.data + b.length, p, n)
    b.length += n
    return 0


cdef int _put_int(_Buf* b, object value) except -1:
    """msgpack's smallest encoding of an int; 1 when it does not fit 64 bits."""
    cdef int overflow = 0
    cdef long long x = PyLong_AsLongLongAndOverflow(value, &overflow)
    cdef unsigned long long u
    if overflow > 0:
        try:
            u = PyLong_AsUnsignedLongLong(value)
        except OverflowError:
            return 1
        return _put_be(b, 0xcf, u, 8)
    if overflow < 0:
        return 1
    if x >= 0:
        if x < 0x80:
            return _put_byte(b, <unsigned char>x)
        if x < 0x100:
            return _put_be(b, 0xcc, <uint64_t>x, 1)
        if x < 0x10000:
            return _put_be(b, 0xcd, <uint64_t>x, 2)
        if x < 0x100000000:
            return _put_be(b, 0xce, <uint64_t>x, 4)
        return _put_be(b, 0xcf, <uint64_t>x, 8)
    if x >= -32:
        return _put_byte(b, <unsigned char>(x & 0xff))
    if x >= -128:
        return _put_be(b, 0xd0, <uint64_t>x, 1)
    if x >= -32768:
        return _put_be(b, 0xd1, <uint64_t>x, 2)
    if x >= -2147483648:
        return _put_be(b, 0xd2, <uint64_t>x, 4)
    return _put_be(b, 0xd3, <uint64_t>x, 8)


cdef int _put_value(_Buf* b, object value, int depth) except -1:
    """Append msgpack of ``value``: 0 when written, 1 when the type (or the
    depth, or the size) is not one this layout covers."""
    cdef type kind = type(value)
    cdef const char* p
    cdef Py_ssize_t n, pos = 0
    cdef PyObject* key
    cdef PyObject* item
    cdef double d
    cdef uint64_t bits
    if value is None:
        return _put_byte(b, 0xc0)
    if kind is bool:
        return _put_byte(b, 0xc3 if value else 0xc2)
    if kind is int:
        return _put_int(b, value)
    if kind is float:
        d = PyFloat_AS_DOUBLE(value)
        memcpy(&bits, &d, 8)
        return _put_be(b, 0xcb, bits, 8)
    if kind is str:
        try:
            p = PyUnicode_AsUTF8AndSize(value, &n)
        except UnicodeEncodeError:
            return 1  # lone surrogates: the careful path says what is wrong
        if n > 0xffffffff:
            return 1
        _put_header(b, n, 0xa0, 32, 0xd9, 0xda, 0xdb)
        return _put_raw(b, p, n)
    if kind is bytes:
        n = PyBytes_GET_SIZE(value)
        if n > 0xffffffff:
            return 1
        _put_header(b, n, 0, 0, 0xc4, 0xc5, 0xc6)
        return _put_raw(b, PyBytes_AS_STRING(value), n)
    if depth >= MAX_DEPTH:
        return 1
    if kind is tuple or kind is list:
        n = len(value)
        if n > 0xffffffff:
            return 1
        _put_header(b, n, 0x90, 16, 0, 0xdc, 0xdd)
        for element in value:
            if _put_value(b, element, depth + 1):
                return 1
        return 0
    if kind is dict:
        n = len(value)
        if n > 0xffffffff:
            return 1
        _put_header(b, n, 0x80, 16, 0, 0xde, 0xdf)
        while PyDict_Next(value, &pos, &key, &item):
            if _put_value(b, <object>key, depth + 1) or _put_value(b, <object>item, depth + 1):
                return 1
        return 0
    return 1


def pack_plain_args(items, Py_ssize_t max_size, bytes headers=b""):
    """``[args, {}]`` in msgpack for every item that is a plain args tuple (not
    an ``(args, kwargs)`` pair) of common value types and fits ``max_size``;
    None for every other item (the caller's careful path handles it).
    ``headers``, msgpack of a map, makes it ``[args, {}, headers]``."""
    cdef list seq = items if type(items) is list else list(items)
    cdef Py_ssize_t n = len(seq), i
    cdef list out = [None] * n
    cdef tuple t
    cdef _Buf b
    b.capacity = 256
    b.length = 0
    b.data = <unsigned char*>PyMem_Malloc(b.capacity)
    if b.data == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            item = seq[i]
            if type(item) is not tuple:
                continue
            t = <tuple>item
            if len(t) == 2 and isinstance(t[0], (tuple, list)) and isinstance(t[1], dict):
                continue
            b.length = 0
            _put_byte(&b, 0x93 if headers else 0x92)  # [args, kwargs(, headers)]
            if _put_value(&b, t, 1):
                continue
            _put_byte(&b, 0x80)  # kwargs: an empty map
            if headers:
                _put_raw(&b, PyBytes_AS_STRING(headers), PyBytes_GET_SIZE(headers))
            if b.length <= max_size:
                out[i] = PyBytes_FromStringAndSize(<char*>b.data, b.length)
    finally:
        PyMem_Free(b.data)
    return out


# --------------------------------------------------------------------------
# PostgreSQL binary formats: COPY rows and int arrays, in a file of their own
# --------------------------------------------------------------------------

include "_core_pg.pxi"
