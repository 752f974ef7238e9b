"""Property tests: the compiled core is byte-identical to the pure twin (and
its msgpack encoding to msgpack's own), and decoding is total (any bytes -> a
value or PayloadError, nothing else)."""

from __future__ import annotations

import importlib
import struct
import types
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from currant import payload as P

PY = importlib.import_module("currant._core_py")


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)
args_st = st.lists(values, max_size=6).flatmap(lambda xs: st.sampled_from([xs, tuple(xs)]))
kwargs_st = st.none() | st.dictionaries(st.text(max_size=12), values, max_size=6)

# valid text for COPY: any str without NUL or lone surrogates
pg_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
rows_st = st.lists(
    st.tuples(
        st.integers(-(2**63), 2**63 - 1),
        pg_text,
        pg_text,
        st.binary(max_size=64),
        st.integers(-(2**15), 2**15 - 1),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(-(2**63), 2**63 - 1),
        pg_text,
        st.none() | pg_text,
    ),
    max_size=8,
)


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    """Result or (exception type, message): comparable across implementations.

    Values are compared by their repr, so a NaN that corruption produced
    compares equal to the other implementation's NaN.
    """
    try:
        return ("ok", repr(fn(*args)))
    except Exception as exc:  # noqa: BLE001 - the point is to compare them
        return (type(exc).__name__, str(exc))


def _read_rows(buf: bytes | bytearray) -> list[tuple[Any, ...]]:
    rows, pos = [], 0
    while pos < len(buf):
        (nfields,) = struct.unpack_from("!h", buf, pos)
        assert nfields in (8, 9)
        pos += 2
        fields: list[bytes | None] = []
        for _ in range(nfields):
            (length,) = struct.unpack_from("!i", buf, pos)
            pos += 4
            if length < 0:
                fields.append(None)
            else:
                fields.append(bytes(buf[pos : pos + length]))
                pos += length
        job_id: tuple[int, ...] = ()
        if nfields == 9:
            i8 = fields.pop(0)
            assert i8 is not None
            job_id = (struct.unpack("!q", i8)[0],)
        q, t, p, i2, i4, ts, s, u = fields
        assert i2 is not None and i4 is not None and ts is not None
        assert q is not None and t is not None and p is not None and s is not None
        rows.append(
            (
                *job_id,
                q.decode(),
                t.decode(),
                p,
                struct.unpack("!h", i2)[0],
                struct.unpack("!i", i4)[0],
                struct.unpack("!q", ts)[0],
                s.decode(),
                None if u is None else u.decode(),
            )
        )
    return rows


# -- payloads (the rules live once, in currant.payload) -------------------------


@SETTINGS
@given(args=args_st, kwargs=kwargs_st)
def test_pack_payload_is_msgpack_and_round_trips(args: Any, kwargs: Any) -> None:
    data = P.pack_payload(args, kwargs)
    assert data == msgpack.packb([list(args), dict(kwargs or {})], use_bin_type=True)
    assert P.unpack_payload(data) == (tuple(args), dict(kwargs or {}))


class _Unencodable:
    pass


class _IntSubclass(int):
    pass


enqueue_items = st.lists(
    args_st.map(tuple)  # plain args tuples: the fast path
    | st.tuples(args_st, st.dictionaries(st.text(max_size=4), values, max_size=2))  # (args, kwargs) pairs
    | args_st.map(list)  # a list is not a plain args tuple
    | st.tuples(st.just(_Unencodable()))  # does not encode
    | st.tuples(
        st.integers(0, 9).map(_IntSubclass), st.binary(max_size=3).map(bytearray)
    )  # msgpack packs these; C leaves them
    | st.tuples(st.binary(min_size=40, max_size=60)),  # over the cap below
    max_size=12,
)


def _common_types_only(value: Any) -> bool:
    """What the compiled encoder writes itself (exact types, as msgpack's Packer sees them)."""
    kind = type(value)
    if value is None or kind in (bool, int, float, str, bytes):
        return kind is not int or -(2**63) <= value < 2**64
    if kind in (tuple, list):
        return all(_common_types_only(item) for item in value)
    if kind is dict:
        return all(_common_types_only(k) and _common_types_only(v) for k, v in value.items())
    return False


@SETTINGS
@given(items=enqueue_items)
def test_pack_plain_args_matches_pack_payload(core: types.ModuleType, items: list[Any]) -> None:
    """Byte for byte what pack_payload writes; None exactly where the careful path must look."""
    cap = 48
    packed = core.pack_plain_args(items, cap)
    assert len(packed) == len(items)
    for item, data in zip(items, packed, strict=True):
        reference = _outcome(P.pack_payload, item, None)
        fits = reference[0] == "ok" and len(P.pack_payload(item, None)) <= cap
        if data is not None:
            assert P.is_plain_args(item) and fits and data == P.pack_payload(item, None), (item, data)
        else:
            # Left to the careful path: not plain, does not encode, over the cap, or
            # (compiled core only) holds a type it does not write itself.
            might_pack = P.is_plain_args(item) and fits
            assert not might_pack or (core is not PY and not _common_types_only(item)), item


@SETTINGS
@given(value=values)
def test_pack_value_is_msgpack_and_round_trips(value: Any) -> None:
    data = P.pack_value(value)
    assert data == msgpack.packb(value, use_bin_type=True)
    assert P.unpack_value(data) == value


@SETTINGS
@given(value=st.floats(allow_nan=True) | st.lists(st.floats(allow_nan=True), max_size=3))
def test_nan_bytes_survive_a_round_trip(value: Any) -> None:
    data = P.pack_value(value)
    assert P.pack_value(P.unpack_value(data)) == data


@SETTINGS
@given(data=st.binary(max_size=64))
def test_unpack_arbitrary_bytes_is_total(data: bytes) -> None:
    assert _outcome(P.unpack_payload, data)[0] in ("ok", "PayloadError")
    assert _outcome(P.unpack_value, data)[0] in ("ok", "PayloadError")


@SETTINGS
@given(args=args_st, kwargs=kwargs_st, cut=st.integers(0, 200), junk=st.binary(max_size=8), pos=st.integers(0, 200))
def test_corrupted_payloads_are_total_and_isolated(args: Any, kwargs: Any, cut: int, junk: bytes, pos: int) -> None:
    data = P.pack_payload(args, kwargs)
    variants = [data[: cut % (len(data) + 1)], data + junk, data[:pos] + junk + data[pos + len(junk) :], data]
    expected = []
    for i, variant in enumerate(variants):
        got = _outcome(P.unpack_payload, variant)
        assert got[0] in ("ok", "PayloadError")
        try:
            decoded = P.unpack_envelope(variant)
            expected.append((i, 1, "t", decoded[0], decoded[1], None, decoded[2], "q", None, 0.5))
        except P.PayloadError as exc:
            expected.append((i, 1, "t", None, None, str(exc), None, "q", None, 0.5))
    # One batch: each row decodes as it does alone, whatever its neighbours are.
    rows = [(i, 1, "t", v, None, 0.5, None, None, None) for i, v in enumerate(variants)]
    assert repr(P.decode_claimed(rows, "q")) == repr(expected)


@SETTINGS
@given(args=args_st, kwargs=kwargs_st, junk=st.binary(max_size=8), pos=st.integers(0, 200), raw=st.binary(max_size=64))
def test_compiled_payload_rules_match_the_pure_module(
    payload: types.ModuleType, args: Any, kwargs: Any, junk: bytes, pos: int, raw: bytes
) -> None:
    """currant._payload_c is currant/payload.py compiled: same bytes, same values, same errors."""
    data = P.pack_payload(args, kwargs)
    assert payload.pack_payload(args, kwargs) == data
    for blob in (data, data[:pos] + junk + data[pos + len(junk) :], raw):
        assert repr(_outcome(payload.unpack_payload, blob)) == repr(_outcome(P.unpack_payload, blob))
        assert repr(_outcome(payload.unpack_value, blob)) == repr(_outcome(P.unpack_value, blob))
    rows = [(1, 1, "t", data, None, 0.5, None, None, None), (2, 1, "t", raw, None, 0.5, "f", [3], [raw])]
    assert repr(payload.decode_claimed(rows, "q")) == repr(P.decode_claimed(rows, "q"))


# -- COPY rows and arrays ----------------------------------------------------------


@SETTINGS
@given(rows=rows_st, prefix=st.binary(max_size=4))
def test_write_job_rows_identical_and_parses(
    core: types.ModuleType,
    rows: list[tuple[Any, ...]],
    prefix: bytes,
) -> None:
    # With their ids, and without (bulk enqueue: the table draws them).
    for form in (rows, [row[1:] for row in rows]):
        out = bytearray(prefix)
        assert core.write_job_rows(out, form) == len(form)
        ref = bytearray(prefix)
        PY.write_job_rows(ref, form)
        assert out == ref
        assert _read_rows(out[len(prefix) :]) == form


@SETTINGS
@given(
    rows=rows_st.filter(bool),
    field=st.integers(0, 8),
    bad=st.sampled_from([None, "x\x00y", "\udc80", 2**63, -(2**63) - 1, 40000, 2**31, 1.5, b"b", object()]),
    where=st.integers(0, 10),
    with_ids=st.booleans(),
)
def test_bad_rows_identical_errors_and_restore(
    core: types.ModuleType, rows: list[tuple[Any, ...]], field: int, bad: Any, where: int, with_ids: bool
) -> None:
    if not with_ids:
        rows = [row[1:] for row in rows]
    i = where % len(rows)
    row = list(rows[i])
    row[field % len(row)] = bad
    rows = rows[:i] + [tuple(row)] + rows[i + 1 :]
    out = bytearray(b"abc")
    got = _outcome(core.write_job_rows, out, rows)
    ref = bytearray(b"abc")
    assert got == _outcome(PY.write_job_rows, ref, rows)
    if got[0] != "ok":
        assert got[1].startswith(f"row {i}: ")
        assert out == b"abc"
    else:
        assert out == ref


@SETTINGS
@given(values=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50))
def test_int8_array_identical(core: types.ModuleType, values: list[int]) -> None:
    data = core.pack_int8_array(values)
    assert data == PY.pack_int8_array(values)
    if values:
        assert data[:20] == struct.pack("!iiiii", 1, 0, 20, len(values), 1)
        assert [struct.unpack_from("!iq", data, 20 + 12 * k) for k in range(len(values))] == [(8, v) for v in values]
    else:
        assert data == struct.pack("!iii", 0, 0, 20)


@SETTINGS
@given(values=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=50))
def test_int4_array_identical(core: types.ModuleType, values: list[int]) -> None:
    data = core.pack_int4_array(values)
    assert data == PY.pack_int4_array(values)
    if values:
        assert data[:20] == struct.pack("!iiiii", 1, 0, 23, len(values), 1)
        assert [struct.unpack_from("!ii", data, 20 + 8 * k) for k in range(len(values))] == [(4, v) for v in values]
    else:
        assert data == struct.pack("!iii", 0, 0, 23)


@SETTINGS
@given(values=st.lists(st.integers(-(2**70), 2**70) | st.none(), max_size=10))
def test_int_array_errors_identical(core: types.ModuleType, values: list[Any]) -> None:
    assert _outcome(core.pack_int8_array, values) == _outcome(PY.pack_int8_array, values)
    assert _outcome(core.pack_int4_array, values) == _outcome(PY.pack_int4_array, values)
