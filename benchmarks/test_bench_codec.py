"""Codec benchmarks: compiled ``currant._core`` vs the pure twin ``currant._core_py``,
and the msgpack rules of ``currant.payload`` (one implementation, used by both).

Run: ``python -m pytest benchmarks/test_bench_codec.py -p no:cacheprovider --benchmark-only``.
Each operation/size is its own benchmark group, so the table shows c vs python
side by side.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

import pytest

from currant import payload

PY = importlib.import_module("currant._core_py")
try:
    C: types.ModuleType | None = importlib.import_module("currant._core")
except ImportError:  # pure-Python build
    C = None

IMPLS = [
    pytest.param("c", id="c", marks=[pytest.mark.c_extension, pytest.mark.skipif(C is None, reason="not built")]),
    pytest.param("python", id="python"),
]
SIZES = [1, 1000]


def _impl(name: str) -> types.ModuleType:
    return PY if name == "python" else C  # type: ignore[return-value]


# Inputs are built once at import time so the timings measure only the codec.
ARGS = [(i, f"user-{i}@example.com", {"template": "welcome", "retry": i % 3 == 0}) for i in range(1000)]
KWARGS = [{"priority": "high", "tags": ["a", "b"], "blob": b"\x00" * 16} for _ in range(1000)]
PAYLOADS = [payload.pack_payload(a, k) for a, k in zip(ARGS, KWARGS, strict=True)]
PLAIN_ITEMS = [(i, "x" * 32) for i in range(1000)]
JOB_ROWS = [
    (
        i,
        "default",
        "app.tasks.send_email",
        PAYLOADS[i],
        i % 10,
        25,
        800_000_000_000_000 + i,
        "available",
        None if i % 2 else f"email:{i}",
    )
    for i in range(1000)
]
CLAIMED = [(i, 1, "app.tasks.send_email", PAYLOADS[i], None, 0.001, None, None, None) for i in range(1000)]
IDS = list(range(10_000_000, 10_001_000))


@pytest.mark.benchmark
@pytest.mark.parametrize("n", SIZES)
def test_pack_payload(benchmark: Any, n: int) -> None:
    pack = payload.pack_payload
    pairs = list(zip(ARGS[:n], KWARGS[:n], strict=True))
    benchmark.group = f"pack_payload x{n}"

    def run() -> list[bytes]:
        return [pack(a, k) for a, k in pairs]

    assert benchmark(run) == PAYLOADS[:n]


@pytest.mark.benchmark
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", IMPLS)
def test_pack_plain_args(benchmark: Any, impl: str, n: int) -> None:
    """enqueue_many's encoding of plain args tuples (the compiled core writes msgpack in C)."""
    pack = _impl(impl).pack_plain_args
    items = PLAIN_ITEMS[:n]
    benchmark.group = f"pack_plain_args x{n}"
    assert benchmark(pack, items, 1 << 20) == [payload.pack_payload(item, None) for item in items]


@pytest.mark.benchmark
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", IMPLS)
def test_write_job_rows(benchmark: Any, impl: str, n: int) -> None:
    write = _impl(impl).write_job_rows
    rows = JOB_ROWS[:n]
    benchmark.group = f"write_job_rows x{n}"

    def run() -> bytearray:
        out = bytearray()
        write(out, rows)
        return out

    out = benchmark(run)
    ref = bytearray()
    PY.write_job_rows(ref, rows)
    assert out == ref


@pytest.mark.benchmark
@pytest.mark.parametrize("n", SIZES)
def test_decode_claimed(benchmark: Any, n: int) -> None:
    decode = payload.decode_claimed
    rows = CLAIMED[:n]
    benchmark.group = f"decode_claimed x{n}"
    out = benchmark(decode, rows, "default")
    assert len(out) == n and all(r[5] is None for r in out)


@pytest.mark.benchmark
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", IMPLS)
def test_pack_int8_array(benchmark: Any, impl: str, n: int) -> None:
    pack = _impl(impl).pack_int8_array
    ids = IDS[:n]
    benchmark.group = f"pack_int8_array x{n}"
    assert benchmark(pack, ids) == PY.pack_int8_array(ids)
