"""Type stub for the compiled ``currant._core`` (mirrors ``currant._core_py``).

Timestamps are int64 microseconds since 2000-01-01 00:00:00 UTC
(PostgreSQL's binary timestamptz).
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from currant._core_py import PayloadError as PayloadError

__all__ = [
    "COPY_HEADER",
    "COPY_TRAILER",
    "PG_EPOCH_US",
    "PayloadError",
    "decode_claimed",
    "pack_int4_array",
    "pack_int8_array",
    "pack_payload",
    "pack_plain_args",
    "pack_value",
    "unpack_payload",
    "unpack_value",
    "write_job_rows",
]

_BytesLike = bytes | bytearray | memoryview

PG_EPOCH_US: int
COPY_HEADER: bytes
COPY_TRAILER: bytes

def pack_payload(args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> bytes: ...
def pack_plain_args(items: Iterable[Any], max_size: int) -> list[bytes | None]: ...
def pack_value(value: Any) -> bytes: ...
def unpack_payload(data: _BytesLike, max_size: int = 1048576) -> tuple[tuple[Any, ...], dict[str, Any]]: ...
def unpack_value(data: _BytesLike, max_size: int = 1048576) -> Any: ...
def decode_claimed(
    rows: Iterable[tuple[int, int, str, _BytesLike]], max_size: int = 1048576
) -> list[tuple[int, int, str, tuple[Any, ...] | None, dict[str, Any] | None, str | None]]: ...
def write_job_rows(
    out: bytearray,
    rows: Iterable[tuple[int, str, str, _BytesLike, int, int | None, int, str, str | None]],
) -> int: ...
def pack_int8_array(values: Iterable[int]) -> bytes: ...
def pack_int4_array(values: Iterable[int]) -> bytes: ...
