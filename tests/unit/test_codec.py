"""Example-based tests of the core's binary formats, run against both implementations.

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

import pytest

from currant import codec

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
# COPY rows
# ---------------------------------------------------------------------------


def test_write_job_rows_format(core: types.ModuleType) -> None:
    rows = [
        job(1),
        job(
            2**63 - 1,
            queue="q€",
            task="",
            payload=b"",
            priority=-32768,
            max_attempts=2**31 - 1,
            run_at=-(2**63),
            state="x",
            unique_key="k✓",
        ),
        job(
            -(2**63), payload=bytes(range(256)), priority=32767, max_attempts=-(2**31), run_at=2**63 - 1, unique_key=""
        ),
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


def test_write_job_rows_without_ids(core: types.ModuleType) -> None:
    """Rows of 8 fields leave the id out (the table's identity default draws
    it): the same bytes as with it, less the id field, and a count of 8."""
    rows = [job(1), job(2, max_attempts=None, unique_key="k", payload=b"")]
    with_ids, without = bytearray(), bytearray()
    core.write_job_rows(with_ids, rows)
    assert core.write_job_rows(without, [row[1:] for row in rows]) == 2
    expected = b"".join(struct.pack("!h", 8) + row_bytes[2 + 12 :] for row_bytes in _split_rows(with_ids))
    assert without == expected
    ref = bytearray()
    PY.write_job_rows(ref, [row[1:] for row in rows])
    assert without == ref
    with pytest.raises(OverflowError, match="^row 0: priority value 32768 is out of int2 range"):
        core.write_job_rows(bytearray(), [job(1, priority=32768)[1:]])


def _split_rows(buf: bytes | bytearray) -> list[bytes]:
    """Each COPY row's bytes, from its field count to its last field."""
    rows, pos = [], 0
    while pos < len(buf):
        start = pos
        (nfields,) = struct.unpack_from("!h", buf, pos)
        pos += 2
        for _ in range(nfields):
            (length,) = struct.unpack_from("!i", buf, pos)
            pos += 4 + max(length, 0)
        rows.append(bytes(buf[start:pos]))
    return rows


def test_write_job_rows_accepts_iterables_and_buffers(core: types.ModuleType) -> None:
    out = bytearray()
    n = core.write_job_rows(
        out, (list(job(i, payload=bytearray(b"ab") if i % 2 else memoryview(b"cd"))) for i in range(4))
    )
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
def test_write_job_rows_bad_row_restores_out(
    core: types.ModuleType,
    override: dict[str, Any],
    exc_type: type[Exception],
    word: str,
) -> None:
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


@pytest.mark.parametrize(
    "row", [(1, 2), job(1)[2:], job(1) + (None,), 5], ids=["short", "one-short-of-idless", "long", "not-a-row"]
)
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


@pytest.mark.parametrize(
    "values",
    [[], [0], [1, 2, -3], [2**63 - 1, -(2**63)], list(range(1000))],
    ids=["empty", "one", "small", "extremes", "1000"],
)
def test_pack_int8_array(core: types.ModuleType, values: list[int]) -> None:
    data = core.pack_int8_array(values)
    assert read_int_array(data) == (20, values)
    assert data == PY.pack_int8_array(values) == core.pack_int8_array(tuple(values))


@pytest.mark.parametrize(
    "values",
    [[], [0], [1, 2, -3], [2**31 - 1, -(2**31)]],
    ids=["empty", "one", "small", "extremes"],
)
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
def test_pack_int_array_errors(
    core: types.ModuleType,
    fn: str,
    values: list[Any],
    exc_type: type[Exception],
    word: str,
) -> None:
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
        job(
            2**63 - 1,
            queue="q€ ✓",
            task="",
            payload=b"",
            priority=-32768,
            max_attempts=2**31 - 1,
            run_at=-(10**15),
            state="x",
            unique_key="k",
        ),
        job(
            -(2**63), payload=bytes(range(256)) * 3, priority=32767, max_attempts=-(2**31), run_at=10**16, unique_key=""
        ),
        job(4, payload=codec.pack_payload((1, "a"), {"b": None}), run_at=0),
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
def test_arrays_match_array_send(
    core: types.ModuleType,
    pg_conn: Any,
    fn: str,
    sql_type: str,
    values: list[int],
) -> None:
    literal = "{" + ",".join(map(str, values)) + "}"
    (sent,) = pg_conn.execute(f"SELECT array_send(%s::{sql_type}[])", [literal]).fetchone()
    assert getattr(core, fn)(values) == bytes(sent)
