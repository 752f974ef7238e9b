"""Type stub for the compiled ``currant._core`` (mirrors ``currant._core_py``).

Timestamps are int64 microseconds since 2000-01-01 00:00:00 UTC
(PostgreSQL's binary timestamptz).
"""

from collections.abc import Iterable
from typing import Any

__all__ = [
    "COPY_HEADER",
    "COPY_TRAILER",
    "PG_EPOCH_US",
    "pack_int4_array",
    "pack_int8_array",
    "pack_plain_args",
    "write_job_rows",
]

_BytesLike = bytes | bytearray | memoryview

PG_EPOCH_US: int
COPY_HEADER: bytes
COPY_TRAILER: bytes

def pack_plain_args(items: Iterable[Any], max_size: int, headers: bytes = b"") -> list[bytes | None]: ...
def write_job_rows(
    out: bytearray,
    rows: Iterable[
        tuple[str, str, _BytesLike, int, int | None, int, str, str | None]
        | tuple[int, str, str, _BytesLike, int, int | None, int, str, str | None]
    ],
) -> int: ...
def pack_int8_array(values: Iterable[int]) -> bytes: ...
def pack_int4_array(values: Iterable[int]) -> bytes: ...
