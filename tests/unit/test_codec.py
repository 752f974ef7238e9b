"""Example-based tests for the codec core, run against both implementations.

``core`` is ``currant._core`` (id "c") or ``currant._core_py`` (id "python").
No database is needed except for ``test_copy_into_postgres`` /
``test_arrays_match_array_send``, which use ``CURRANT_TEST_DSN`` when set.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import struct
import types
from typing import Any

import msgpack
import pytest

PY = importlib.import_module("currant._core_py")


# ---------------------------------------------------------------------------
# tiny struct-based readers for the binary formats (independent of the code)
# ---------------------------------------------------------------------------

JOB_FIELDS = ("id", "queue", "task", "payload", "priority", "max_attempts", "run_at", "state", "unique_key")


def read_copy_rows(buf: bytes | bytearray) -> list[list[bytes | None]]:
    rows: list[list[bytes | None]] = []
    pos = 0
    while pos < len(buf):
        (nfields,) = struct.unpack_from("!h", buf, pos)
        pos += 2
        fields: list[bytes | None] = []
        for _ in range(nfields):
            (length,) = struct.unpack_from("!i", buf, pos)
            pos += 4
            if length == -1:
                fields.append(None)
            else:
                assert length >= 0 and pos + length <= len(buf)
                fields.append(bytes(buf[pos : pos + length]))
                pos += length
        rows.append(fields)
    assert pos == len(buf)
    return rows


def decode_job_row(fields: list[bytes | None]) -> tuple[Any, ...]:
    assert len(fields) == 9
    id_, queue, task, payload, priority, max_attempts, run_at, state, unique_key = fields
    assert id_ is not None and len(id_) == 8
    assert priority is not None and len(priority) == 2
    assert max_attempts is not None and len(max_attempts) == 4
    assert run_at is not None and len(run_at) == 8
    assert queue is not None and task is not None and payload is not None and state is not None
    return (
        struct.unpack("!q", id_)[0],
        queue.decode("utf-8"),
        task.decode("utf-8"),
        payload,
        struct.unpack("!h", priority)[0],
        struct.unpack("!i", max_attempts)[0],
        struct.unpack("!q", run_at)[0],
        state.decode("utf-8"),
        None if unique_key is None else unique_key.decode("utf-8"),
    )


def read_int_array(buf: bytes) -> tuple[int, list[int]]:
    ndim, has_null, oid = struct.unpack_from("!iii", buf, 0)
    assert has_null == 0
    if ndim == 0:
        assert len(buf) == 12
        return oid, []
    assert ndim == 1
    n, lower = struct.unpack_from("!ii", buf, 12)
    assert lower == 1
    width = {20: 8, 23: 4}[oid]
    values = []
    pos = 20
    for _ in range(n):
        (length,) = struct.unpack_from("!i", buf, pos)
        assert length == width
        values.append(struct.unpack_from("!q" if width == 8 else "!i", buf, pos + 4)[0])
        pos += 4 + width
    assert pos == len(buf)
    return oid, values


def job(i: int = 1, **overrides: Any) -> tuple[Any, ...]:
    row = dict(
        id=i,
        queue="default",
        task="app.tasks.send_email",
        payload=b"\x92\x91\x01\x80",
        priority=0,
        max_attempts=25,
        run_at=800_000_000_000_000 + i,
        state="available",
        unique_key=None,
    )
    row.update(overrides)
    return tuple(row[f] for f in JOB_FIELDS)


# ---------------------------------------------------------------------------
# constants and identity
# ---------------------------------------------------------------------------


def test_constants(core: types.ModuleType) -> None:
    assert core.COPY_HEADER == b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
    assert len(core.COPY_HEADER) == 19
    assert core.COPY_TRAILER == b"\xff\xff"
    epoch = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    assert core.PG_EPOCH_US == int(epoch.timestamp()) * 1_000_000


def test_payload_error_is_one_class(core: types.ModuleType) -> None:
    """Both cores raise the one class the codec (and so the worker) catches."""
    from currant import codec

    assert core.PayloadError is codec.PayloadError
    assert issubclass(core.PayloadError, ValueError)
    for bad in (b"\xc1", b"\x92\x91", codec.encode_payload((), None) + b"\x00"):
        with pytest.raises(ValueError) as raised:
            core.unpack_payload(bad)
        assert type(raised.value) is codec.PayloadError, (bad, type(raised.value))
    (row,) = core.decode_claimed([(1, 1, "t", b"\xc1")])
    assert row[:5] == (1, 1, "t", None, None) and isinstance(row[5], str) and row[5]


def _stub_names() -> set[str]:
    """The public names the stub ``_core.pyi`` declares: the interface both cores implement."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(PY.__file__).with_name("_core.pyi").read_text())
    declared: set[str] = set()
    exported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            declared.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            declared.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            exported = set(ast.literal_eval(node.value))
    assert exported and exported <= declared, (exported, declared)
    return exported


def test_same_public_names(core: types.ModuleType) -> None:
    names = _stub_names()
    assert set(core.__all__) == names
    for name in sorted(names):
        assert hasattr(core, name), name
        if name[0].islower():
            assert callable(getattr(core, name)), name


# ---------------------------------------------------------------------------
# payloads
# ---------------------------------------------------------------------------

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    float("inf"),
    "",
    "héllo ✓",
    b"",
    b"\x00\xff",
    [],
    [1, [2, [3, {}]]],
    {"a": {"b": [None, b"x"]}},
]


@pytest.mark.parametrize("args", [(), (1, "a"), [1, "a"], tuple(VALUES)], ids=["empty", "tuple", "list", "all"])
@pytest.mark.parametrize("kwargs", [None, {}, {"x": 1, "nested": {"k": VALUES}}], ids=["none", "empty", "nested"])
def test_payload_round_trip(core: types.ModuleType, args: Any, kwargs: Any) -> None:
    data = core.pack_payload(args, kwargs)
    expected = msgpack.packb([list(args), dict(kwargs or {})], use_bin_type=True)
    assert data == expected
    assert data == PY.pack_payload(args, kwargs)
    assert core.unpack_payload(data) == (tuple(args), dict(kwargs or {}))


def test_pack_payload_accepts_mapping_and_iterables(core: types.ModuleType) -> None:
    data = core.pack_payload(iter([1, 2]), types.MappingProxyType({"a": 1}))
    assert core.unpack_payload(data) == ((1, 2), {"a": 1})


def test_pack_payload_rejects_str_args(core: types.ModuleType) -> None:
    with pytest.raises(TypeError, match="args"):
        core.pack_payload("abc", None)


@pytest.mark.parametrize("key", [1, b"k", None, ("t",)])
def test_pack_payload_non_str_key(core: types.ModuleType, key: Any) -> None:
    with pytest.raises(TypeError, match="key") as info:
        core.pack_payload((), {key: 1})
    assert repr(key) in str(info.value)


def _cyclic() -> list[Any]:
    cycle: list[Any] = []
    cycle.append(cycle)
    return cycle


@pytest.mark.parametrize(
    "value",
    [object(), dt.datetime(2024, 1, 1), 2**64, -(2**63) - 1, {1, 2}, _cyclic()],
    ids=["object", "datetime", "uint64+1", "int64-1", "set", "cycle"],
)
def test_pack_unencodable_is_type_error(core: types.ModuleType, value: Any) -> None:
    with pytest.raises(TypeError):
        core.pack_payload((value,), None)
    with pytest.raises(TypeError):
        core.pack_payload((), {"v": value})
    with pytest.raises(TypeError):
        core.pack_value(value)
    # the per-thread Packer is left clean after a failure
    assert core.pack_value(1) == b"\x01"


def test_pack_from_many_threads(core: types.ModuleType) -> None:
    # The reusable Packer is per thread; a shared one would interleave output.
    import threading

    payloads = [((i, "x" * i), {"k": list(range(i))}) for i in range(100)]
    expected = [PY.pack_payload(a, k) for a, k in payloads]
    mismatches: list[int] = []

    def work() -> None:
        for _ in range(20):
            mismatches.extend(i for i, (a, k) in enumerate(payloads) if core.pack_payload(a, k) != expected[i])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []


@pytest.mark.parametrize("value", VALUES + [VALUES], ids=lambda v: type(v).__name__)
def test_value_round_trip(core: types.ModuleType, value: Any) -> None:
    data = core.pack_value(value)
    assert data == msgpack.packb(value, use_bin_type=True) == PY.pack_value(value)
    assert core.unpack_value(data) == value


def test_unpack_accepts_buffers(core: types.ModuleType) -> None:
    data = core.pack_payload((1,), {"a": b"b"})
    for buf in (bytearray(data), memoryview(data)):
        assert core.unpack_payload(buf) == ((1,), {"a": b"b"})
        assert core.unpack_value(buf) == [[1], {"a": b"b"}]


def _pk(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _deep(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


# (data, word that must appear in the reason); all of them must raise PayloadError.
MALFORMED_ANY: list[tuple[str, bytes, str]] = [
    ("empty", b"", "truncated"),
    ("invalid-byte", b"\xc1", "invalid msgpack"),
    ("invalid-byte-nested", b"\x92\x90\xc1", "invalid msgpack"),
    ("truncated", _pk([[1, 2], {"a": "bcd"}])[:-2], "truncated"),
    ("trailing", _pk([[], {}]) + b"\x01\x02\x03", "3 bytes of trailing data"),
    ("bad-utf8", b"\x92\x91\xa2\xc3\x28\x80", "UTF-8"),
    ("bad-utf8-key", b"\x92\x90\x81\xa1\xff\x01", "UTF-8"),
    ("ext", _pk([[msgpack.ExtType(5, b"x")], {}]), "ExtType"),
    ("ext-in-kwargs", b"\x92\x90\x81\xa1k\x81\xa1z\xd4\xf9\x00", "ExtType"),  # reserved type -7
    ("timestamp32", _pk([[msgpack.Timestamp(1, 0)], {}]), "ExtType"),
    ("timestamp64", _pk([[], {"t": [msgpack.Timestamp(1, 5)]}]), "ExtType"),
    ("timestamp96", _pk([[msgpack.Timestamp(-(2**40), 5)], {}]), "ExtType"),
    ("too-deep", _deep(5000), "nesting"),
    ("array-bomb", b"\xdd\xff\xff\xff\xff", "truncated"),
    ("map-bomb", b"\xdf\xff\xff\xff\xff", "truncated"),
    ("str-bomb", b"\xdb\xff\xff\xff\xff", "truncated"),
    ("bin-bomb", b"\xc6\xff\xff\xff\xff", "truncated"),
    ("ext-bomb", b"\xc9\xff\xff\xff\xff\x01", "truncated"),
    ("int-map-key", b"\x92\x90\x81\x01\x01", "map key"),
    ("array-map-key", b"\x81\x90\x01", "map key"),
]

MALFORMED_SHAPE: list[tuple[str, bytes, str]] = [
    ("top-map", _pk({"args": []}), "top level"),
    ("top-int", _pk(1), "top level"),
    ("top-1-array", _pk([[]]), "top level"),
    ("top-3-array", _pk([[], {}, None]), "top level"),
    ("args-map", _pk([{}, {}]), "args"),
    ("args-nil", _pk([None, {}]), "args"),
    ("kwargs-array", _pk([[], []]), "kwargs"),
    ("kwargs-nil", _pk([[], None]), "kwargs"),
    ("bytes-kwargs-key", _pk([[], {b"k": 1}]), "keys must be str"),
]


@pytest.mark.parametrize("data,word", [c[1:] for c in MALFORMED_ANY + MALFORMED_SHAPE], ids=[c[0] for c in MALFORMED_ANY + MALFORMED_SHAPE])
def test_unpack_payload_malformed(core: types.ModuleType, data: bytes, word: str) -> None:
    with pytest.raises(PY.PayloadError, match=word) as info:
        core.unpack_payload(data)
    assert str(info.value) == _reason(PY.unpack_payload, data)


@pytest.mark.parametrize("data,word", [c[1:] for c in MALFORMED_ANY], ids=[c[0] for c in MALFORMED_ANY])
def test_unpack_value_malformed(core: types.ModuleType, data: bytes, word: str) -> None:
    with pytest.raises(PY.PayloadError, match=word):
        core.unpack_value(data)


def _reason(fn: Any, data: Any, *args: Any) -> str:
    try:
        fn(data, *args)
    except PY.PayloadError as exc:
        return str(exc)
    raise AssertionError("no PayloadError")


def test_unpack_size_cap(core: types.ModuleType) -> None:
    data = core.pack_payload(("x" * 100,), None)
    assert core.unpack_payload(data, len(data)) == (("x" * 100,), {})
    with pytest.raises(PY.PayloadError, match=rf"payload is {len(data)} bytes, over the {len(data) - 1}-byte cap"):
        core.unpack_payload(data, len(data) - 1)
    with pytest.raises(PY.PayloadError, match="cap"):
        core.unpack_value(data, 10)
    with pytest.raises(PY.PayloadError, match="cap"):
        core.unpack_payload(b"\x00" * ((1 << 20) + 1))


def test_unpack_timestamp_marker_false_positive(core: types.ModuleType) -> None:
    # The bytes d7 ff inside a bin value are not a timestamp: must decode.
    args = (b"\xd7\xff\xd6\xff\xc7\x0c\xff", "\xff")
    assert core.unpack_payload(core.pack_payload(args, None)) == (args, {})


@pytest.mark.parametrize("data", [None, "text", 123, [1]], ids=["none", "str", "int", "list"])
def test_unpack_non_bytes(core: types.ModuleType, data: Any) -> None:
    with pytest.raises(PY.PayloadError, match="must be bytes"):
        core.unpack_payload(data)


def test_decode_claimed_isolates_bad_rows(core: types.ModuleType) -> None:
    good1 = core.pack_payload((1, "a"), {"k": [1]})
    good2 = core.pack_payload((), None)
    rows = [
        (10, 1, "t.ok", good1),
        (11, 2, "t.bad", b"\xc1"),
        (12, 1, "t.ok2", memoryview(good2)),
        (13, 3, "t.trunc", good1[:-1]),
        (14, 1, "t.shape", _pk([1, 2])),
        (15, 1, "t.null", None),
        (16, 1, "t.big", _pk([["x" * 50], {}])),
    ]
    out = core.decode_claimed(rows, 40)
    assert out[0] == (10, 1, "t.ok", (1, "a"), {"k": [1]}, None)
    assert out[1][:5] == (11, 2, "t.bad", None, None) and "invalid" in out[1][5]
    assert out[2] == (12, 1, "t.ok2", (), {}, None)
    assert out[3][:5] == (13, 3, "t.trunc", None, None) and "truncated" in out[3][5]
    assert out[4][:5] == (14, 1, "t.shape", None, None) and "args" in out[4][5]
    assert out[5][:5] == (15, 1, "t.null", None, None) and "bytes" in out[5][5]
    assert out[6][:5] == (16, 1, "t.big", None, None) and "cap" in out[6][5]
    assert out == PY.decode_claimed(rows, 40)
    assert core.decode_claimed([]) == []


# ---------------------------------------------------------------------------
# COPY rows
# ---------------------------------------------------------------------------


def test_write_job_rows_format(core: types.ModuleType) -> None:
    rows = [
        job(1),
        job(2**63 - 1, queue="q€", task="", payload=b"", priority=-32768, max_attempts=2**31 - 1, run_at=-(2**63), state="x", unique_key="k✓"),
        job(-(2**63), payload=bytes(range(256)), priority=32767, max_attempts=-(2**31), run_at=2**63 - 1, unique_key=""),
    ]
    out = bytearray(b"prefix")
    assert core.write_job_rows(out, rows) == 3
    assert out[:6] == b"prefix"
    assert [decode_job_row(f) for f in read_copy_rows(out[6:])] == rows
    # the NULL unique_key is a -1 length; empty string is a 0 length
    assert read_copy_rows(out[6:])[0][8] is None
    assert read_copy_rows(out[6:])[2][8] == b""
    ref = bytearray(b"prefix")
    PY.write_job_rows(ref, rows)
    assert out == ref


def test_write_job_rows_accepts_iterables_and_buffers(core: types.ModuleType) -> None:
    out = bytearray()
    n = core.write_job_rows(out, (list(job(i, payload=bytearray(b"ab") if i % 2 else memoryview(b"cd"))) for i in range(4)))
    assert n == 4
    assert [decode_job_row(f)[3] for f in read_copy_rows(out)] == [b"cd", b"ab", b"cd", b"ab"]
    assert core.write_job_rows(out, []) == 0


BAD_FIELDS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("nul-queue", {"queue": "de\x00fault"}, ValueError, "queue contains a NUL"),
    ("nul-task", {"task": "\x00"}, ValueError, "task contains a NUL"),
    ("nul-state", {"state": "a\x00"}, ValueError, "state contains a NUL"),
    ("nul-unique", {"unique_key": "\x00"}, ValueError, "unique_key contains a NUL"),
    ("surrogate", {"task": "\ud800"}, ValueError, "task cannot be encoded as UTF-8"),
    ("priority-high", {"priority": 32768}, OverflowError, "priority value 32768 is out of int2 range"),
    ("priority-low", {"priority": -32769}, OverflowError, "priority"),
    ("attempts-high", {"max_attempts": 2**31}, OverflowError, "max_attempts"),
    ("id-high", {"id": 2**63}, OverflowError, "id value"),
    ("run-at-huge", {"run_at": -(2**100)}, OverflowError, "run_at"),
    ("id-str", {"id": "1"}, TypeError, "id must be int, not str"),
    ("priority-float", {"priority": 1.0}, TypeError, "priority must be int"),
    ("queue-bytes", {"queue": b"q"}, TypeError, "queue must be str, not bytes"),
    ("queue-none", {"queue": None}, TypeError, "queue must be str"),
    ("state-none", {"state": None}, TypeError, "state must be str"),
    ("payload-str", {"payload": "x"}, TypeError, "payload must be bytes-like, not str"),
    ("payload-int", {"payload": 5}, TypeError, "payload must be bytes-like, not int"),
]


@pytest.mark.parametrize("override,exc_type,word", [c[1:] for c in BAD_FIELDS], ids=[c[0] for c in BAD_FIELDS])
def test_write_job_rows_bad_row_restores_out(core: types.ModuleType, override: dict[str, Any], exc_type: type[Exception], word: str) -> None:
    rows = [job(0), job(1), job(2, **override), job(3)]
    out = bytearray(b"keep me")
    with pytest.raises(exc_type, match=f"^row 2: {word}") as info:
        core.write_job_rows(out, rows)
    assert type(info.value) is exc_type
    assert out == b"keep me"
    ref = bytearray()
    with pytest.raises(exc_type) as ref_info:
        PY.write_job_rows(ref, rows)
    assert str(info.value) == str(ref_info.value)


@pytest.mark.parametrize("row", [(1, 2), job(1) + (None,), 5], ids=["short", "long", "not-a-row"])
def test_write_job_rows_bad_shape(core: types.ModuleType, row: Any) -> None:
    out = bytearray(b"x")
    with pytest.raises((ValueError, TypeError), match="^row 1: "):
        core.write_job_rows(out, [job(0), row])
    assert out == b"x"


def test_write_job_rows_restores_on_iterator_error(core: types.ModuleType) -> None:
    def rows() -> Any:
        yield job(0)
        yield job(1)
        raise KeyError("boom")

    out = bytearray(b"x")
    with pytest.raises(KeyError):
        core.write_job_rows(out, rows())
    assert out == b"x"


def test_write_job_rows_requires_bytearray(core: types.ModuleType) -> None:
    with pytest.raises(TypeError):
        core.write_job_rows(b"", [job(0)])


# ---------------------------------------------------------------------------
# int arrays
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], [0], [1, 2, -3], [2**63 - 1, -(2**63)], list(range(1000))], ids=["empty", "one", "small", "extremes", "1000"])
def test_pack_int8_array(core: types.ModuleType, values: list[int]) -> None:
    data = core.pack_int8_array(values)
    assert read_int_array(data) == (20, values)
    assert data == PY.pack_int8_array(values) == core.pack_int8_array(tuple(values))


@pytest.mark.parametrize("values", [[], [0], [1, 2, -3], [2**31 - 1, -(2**31)]], ids=["empty", "one", "small", "extremes"])
def test_pack_int4_array(core: types.ModuleType, values: list[int]) -> None:
    data = core.pack_int4_array(values)
    assert read_int_array(data) == (23, values)
    assert data == PY.pack_int4_array(values) == core.pack_int4_array(iter(values))


def test_empty_array_bytes(core: types.ModuleType) -> None:
    assert core.pack_int8_array([]) == struct.pack("!iii", 0, 0, 20)
    assert core.pack_int4_array(()) == struct.pack("!iii", 0, 0, 23)


@pytest.mark.parametrize(
    "fn,values,exc_type,word",
    [
        ("pack_int8_array", [1, 2**63], OverflowError, "element 1 value 9223372036854775808 is out of int8 range"),
        ("pack_int8_array", [-(2**63) - 1], OverflowError, "element 0"),
        ("pack_int4_array", [0, 0, 2**31], OverflowError, "element 2 value 2147483648 is out of int4 range"),
        ("pack_int4_array", [-(2**31) - 1], OverflowError, "int4"),
        ("pack_int4_array", [1, "2"], TypeError, "element 1 must be int"),
        ("pack_int8_array", [None], TypeError, "element 0 must be int"),
    ],
)
def test_pack_int_array_errors(core: types.ModuleType, fn: str, values: list[Any], exc_type: type[Exception], word: str) -> None:
    with pytest.raises(exc_type, match=word):
        getattr(core, fn)(values)


# ---------------------------------------------------------------------------
# real PostgreSQL (the suite's server; skipped where there is none)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_conn(request: pytest.FixtureRequest) -> Any:
    dsn = os.environ.get("CURRANT_TEST_DSN")
    if not dsn:
        try:  # the suite's own server (tests/conftest.py), absent when run from a wheel check
            dsn = request.getfixturevalue("database_dsn")
        except pytest.FixtureLookupError:
            pytest.skip("no PostgreSQL: CURRANT_TEST_DSN not set")
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def test_copy_into_postgres(core: types.ModuleType, pg_conn: Any) -> None:
    rows = [
        job(1),
        job(2**63 - 1, queue="q€ ✓", task="", payload=b"", priority=-32768, max_attempts=2**31 - 1, run_at=-(10**15), state="x", unique_key="k"),
        job(-(2**63), payload=bytes(range(256)) * 3, priority=32767, max_attempts=-(2**31), run_at=10**16, unique_key=""),
        job(4, payload=core.pack_payload((1, "a"), {"b": None}), run_at=0),
    ]
    buf = bytearray(core.COPY_HEADER)
    core.write_job_rows(buf, rows)
    buf += core.COPY_TRAILER
    columns = "id, queue, task, payload, priority, max_attempts, run_at, state, unique_key"
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE currant_copy_test (id int8, queue text, task text, payload bytea,"
            " priority int2, max_attempts int4, run_at timestamptz, state text, unique_key text)"
            " ON COMMIT DROP"
        )
        with cur.copy(f"COPY currant_copy_test ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(bytes(buf))
        cur.execute(f"SELECT {columns} FROM currant_copy_test ORDER BY id")
        got = cur.fetchall()
    epoch = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    expected = sorted(
        (r[0], r[1], r[2], r[3], r[4], r[5], epoch + dt.timedelta(microseconds=r[6]), r[7], r[8]) for r in rows
    )
    assert [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in got] == expected


@pytest.mark.parametrize(
    "fn,sql_type,values",
    [
        ("pack_int8_array", "int8", [1, 2, -3]),
        ("pack_int8_array", "int8", [2**63 - 1, -(2**63), 0]),
        ("pack_int8_array", "int8", []),
        ("pack_int4_array", "int4", [1, 2, -3]),
        ("pack_int4_array", "int4", [2**31 - 1, -(2**31)]),
        ("pack_int4_array", "int4", []),
    ],
)
def test_arrays_match_array_send(core: types.ModuleType, pg_conn: Any, fn: str, sql_type: str, values: list[int]) -> None:
    literal = "{" + ",".join(map(str, values)) + "}"
    (sent,) = pg_conn.execute(f"SELECT array_send(%s::{sql_type}[])", [literal]).fetchone()
    assert getattr(core, fn)(values) == bytes(sent)
