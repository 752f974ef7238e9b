# PostgreSQL's binary formats, for currant/_core.pyx (included there, so one
# module: the cimports, constants and twin helpers are that file's): COPY rows
# for bulk enqueue and int8/int4 arrays for batched completions.

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
    cdef Py_ssize_t fields = len(t)
    if fields != 8 and fields != 9:
        raise ValueError(f"expected 8 or 9 fields, got {fields}")
    cdef Py_ssize_t f = fields - 8  # where queue is: after the id, if the row has one
    cdef Py_ssize_t qn, tn, pn, sn, un = -1
    cdef const char* up = NULL
    # Validate every field (column order, like the twin) before touching `out`.
    cdef long long id_ = _int(t[0], "id", INT64_MIN, INT64_MAX, "int8") if f else 0
    cdef const char* qp = _text(t[f], "queue", &qn)
    cdef const char* tp = _text(t[f + 1], "task", &tn)
    payload = t[f + 2]
    if type(payload) is not bytes:
        payload = _bytes_field("payload", payload)  # copies a buffer; TypeError otherwise
    pn = PyBytes_GET_SIZE(payload)
    if pn > INT4_MAX:
        _check_len("payload", pn)
    cdef long long priority = _int(t[f + 3], "priority", INT2_MIN, INT2_MAX, "int2")
    # max_attempts NULL: the worker's task setting decides.
    cdef bint no_max = t[f + 4] is None
    cdef long long max_attempts = 0 if no_max else _int(t[f + 4], "max_attempts", INT4_MIN, INT4_MAX, "int4")
    cdef long long run_at = _int(t[f + 5], "run_at", INT64_MIN, INT64_MAX, "int8")
    cdef const char* sp = _text(t[f + 6], "state", &sn)
    if t[f + 7] is not None:
        up = _text(t[f + 7], "unique_key", &un)

    # field count + a length word per field + fixed-width values + variable data
    cdef Py_ssize_t size = (
        2 + fields * 4 + 8 * f + qn + tn + pn + 2 + (0 if no_max else 4) + 8 + sn + (un if un > 0 else 0)
    )
    cdef Py_ssize_t old = PyByteArray_GET_SIZE(out)
    PyByteArray_Resize(out, old + size)  # amortised growth, like bytearray +=
    cdef unsigned char* w = <unsigned char*>PyByteArray_AS_STRING(out) + old
    w = _be16(w, <uint16_t>fields)
    if f:
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
