"""Example-based tests of the msgpack rules (:mod:`currant.payload`).

Every msgpack rule lives once, in currant.payload; these run on that module
and on its compiled build (currant._payload_c), which must behave the same. What the compiled core adds (bulk enqueue's C
encoding of plain args) is held to these same bytes in test_codec_hypothesis.
"""

from __future__ import annotations

import datetime as dt
import threading
import types
from typing import Any

import msgpack
import pytest

from currant import codec


def test_payload_error_is_one_class(payload: types.ModuleType) -> None:
    assert codec.PayloadError is payload.PayloadError
    assert issubclass(payload.PayloadError, ValueError)


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
def test_payload_round_trip(payload: types.ModuleType, args: Any, kwargs: Any) -> None:
    data = payload.pack_payload(args, kwargs)
    expected = msgpack.packb([list(args), dict(kwargs or {})], use_bin_type=True)
    assert data == expected
    assert payload.unpack_payload(data) == (tuple(args), dict(kwargs or {}))


def test_pack_payload_accepts_mapping_and_iterables(payload: types.ModuleType) -> None:
    data = payload.pack_payload(iter([1, 2]), types.MappingProxyType({"a": 1}))
    assert payload.unpack_payload(data) == ((1, 2), {"a": 1})


def test_pack_payload_rejects_str_args(payload: types.ModuleType) -> None:
    with pytest.raises(TypeError, match="args"):
        payload.pack_payload("abc", None)


@pytest.mark.parametrize("key", [1, b"k", None, ("t",)])
def test_pack_payload_non_str_key(payload: types.ModuleType, key: Any) -> None:
    with pytest.raises(TypeError, match="key") as info:
        payload.pack_payload((), {key: 1})
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
def test_pack_unencodable_is_type_error(payload: types.ModuleType, value: Any) -> None:
    with pytest.raises(TypeError):
        payload.pack_payload((value,), None)
    with pytest.raises(TypeError):
        payload.pack_payload((), {"v": value})
    with pytest.raises(TypeError):
        payload.pack_value(value)
    # the per-thread Packer is left clean after a failure
    assert payload.pack_value(1) == b"\x01"


def test_pack_from_many_threads(payload: types.ModuleType) -> None:
    # The reusable Packer is per thread; a shared one would interleave output.
    payloads = [((i, "x" * i), {"k": list(range(i))}) for i in range(100)]
    expected = [payload.pack_payload(a, k) for a, k in payloads]
    mismatches: list[int] = []

    def work() -> None:
        for _ in range(20):
            mismatches.extend(i for i, (a, k) in enumerate(payloads) if payload.pack_payload(a, k) != expected[i])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []


@pytest.mark.parametrize("value", VALUES + [VALUES], ids=lambda v: type(v).__name__)
def test_value_round_trip(payload: types.ModuleType, value: Any) -> None:
    data = payload.pack_value(value)
    assert data == msgpack.packb(value, use_bin_type=True)
    assert payload.unpack_value(data) == value


def test_unpack_accepts_buffers(payload: types.ModuleType) -> None:
    data = payload.pack_payload((1,), {"a": b"b"})
    for buf in (bytearray(data), memoryview(data)):
        assert payload.unpack_payload(buf) == ((1,), {"a": b"b"})
        assert payload.unpack_value(buf) == [[1], {"a": b"b"}]


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
    ("top-3-array", _pk([[], {}, None]), "headers \\(the third element\\)"),
    ("top-4-array", _pk([[], {}, {}, None]), "top level"),
    ("args-map", _pk([{}, {}]), "args"),
    ("args-nil", _pk([None, {}]), "args"),
    ("kwargs-array", _pk([[], []]), "kwargs"),
    ("kwargs-nil", _pk([[], None]), "kwargs"),
    ("bytes-kwargs-key", _pk([[], {b"k": 1}]), "keys must be str"),
]


@pytest.mark.parametrize(
    "data,word",
    [c[1:] for c in MALFORMED_ANY + MALFORMED_SHAPE],
    ids=[c[0] for c in MALFORMED_ANY + MALFORMED_SHAPE],
)
def test_unpack_payload_malformed(payload: types.ModuleType, data: bytes, word: str) -> None:
    with pytest.raises(payload.PayloadError, match=word):
        payload.unpack_payload(data)


@pytest.mark.parametrize("data,word", [c[1:] for c in MALFORMED_ANY], ids=[c[0] for c in MALFORMED_ANY])
def test_unpack_value_malformed(payload: types.ModuleType, data: bytes, word: str) -> None:
    with pytest.raises(payload.PayloadError, match=word):
        payload.unpack_value(data)


def test_unpack_size_cap(payload: types.ModuleType) -> None:
    data = payload.pack_payload(("x" * 100,), None)
    assert payload.unpack_payload(data, len(data)) == (("x" * 100,), {})
    with pytest.raises(payload.PayloadError, match=rf"payload is {len(data)} bytes, over the {len(data) - 1}-byte cap"):
        payload.unpack_payload(data, len(data) - 1)
    with pytest.raises(payload.PayloadError, match="cap"):
        payload.unpack_value(data, 10)
    with pytest.raises(payload.PayloadError, match="cap"):
        payload.unpack_payload(b"\x00" * ((1 << 20) + 1))


def test_unpack_timestamp_marker_false_positive(payload: types.ModuleType) -> None:
    # The bytes d7 ff inside a bin value are not a timestamp: must decode.
    args = (b"\xd7\xff\xd6\xff\xc7\x0c\xff", "\xff")
    assert payload.unpack_payload(payload.pack_payload(args, None)) == (args, {})


@pytest.mark.parametrize("data", [None, "text", 123, [1]], ids=["none", "str", "int", "list"])
def test_unpack_non_bytes(payload: types.ModuleType, data: Any) -> None:
    with pytest.raises(payload.PayloadError, match="must be bytes"):
        payload.unpack_payload(data)


def test_decode_claimed_isolates_bad_rows(payload: types.ModuleType) -> None:
    good1 = payload.pack_payload((1, "a"), {"k": [1]})
    good2 = payload.pack_payload((), None)
    with_headers = payload.pack_payload((2,), None, {"traceparent": "00-x"})
    rows = [
        (10, 1, "t.ok", good1, None, 0.25, None, None, None),
        (11, 2, "t.bad", b"\xc1", 5, 0.0, None, None, None),
        (12, 1, "t.ok2", memoryview(good2), None, 0.0, None, None, None),
        (13, 3, "t.trunc", good1[:-1], None, 0.0, None, None, None),
        (14, 1, "t.shape", _pk([1, 2]), None, 0.0, None, None, None),
        (15, 1, "t.null", None, None, 0.0, None, None, None),
        (16, 1, "t.big", _pk([["x" * 50], {}]), None, 0.0, None, None, None),
        (17, 1, "t.headers", with_headers, 3, 1.5, None, None, None),
        (18, 1, "t.badheaders", _pk([[], {}, {"k": 1}]), None, 0.0, None, None, None),
    ]
    out = payload.decode_claimed(rows, "mail", 40)
    assert out[0] == (10, 1, "t.ok", (1, "a"), {"k": [1]}, None, None, "mail", None, 0.25)
    assert out[1][:5] == (11, 2, "t.bad", None, None) and "invalid" in out[1][5] and out[1][7:] == ("mail", 5, 0.0)
    assert out[2] == (12, 1, "t.ok2", (), {}, None, None, "mail", None, 0.0)
    assert out[7] == (17, 1, "t.headers", (2,), {}, None, {"traceparent": "00-x"}, "mail", 3, 1.5)
    assert out[8][:5] == (18, 1, "t.badheaders", None, None) and "str to str" in out[8][5]
    assert out[3][:5] == (13, 3, "t.trunc", None, None) and "truncated" in out[3][5]
    assert out[4][:5] == (14, 1, "t.shape", None, None) and "args" in out[4][5]
    assert out[5][:5] == (15, 1, "t.null", None, None) and "bytes" in out[5][5]
    assert out[6][:5] == (16, 1, "t.big", None, None) and "cap" in out[6][5]
    assert out == payload.decode_claimed(rows, "mail", 40)
    assert payload.decode_claimed([], "mail") == []


def test_decode_claimed_passes_parents_results(payload: types.ModuleType) -> None:
    """A job that waited for parents gets their results: first among its args ('f'),
    or as results={parent id: result} ('k'); a result that does not decode fails the job."""
    data = payload.pack_payload((1,), {"k": 2})
    rows = [
        (1, 1, "t", data, None, 0.0, "f", [7], [payload.pack_value("from 7")]),
        (2, 1, "t", data, None, 0.0, "k", [7, 8], [payload.pack_value(7), None]),
        (3, 1, "t", data, None, 0.0, "k", [9], [b"\xc1"]),
    ]
    first, keyword, broken = payload.decode_claimed(rows, "q")
    assert first[3:5] == (("from 7", 1), {"k": 2})
    assert keyword[3:5] == ((1,), {"k": 2, "results": {7: 7, 8: None}})
    assert broken[3] is None and "invalid msgpack" in broken[5]
