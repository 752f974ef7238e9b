"""The one import point for encoding and decoding: the chosen core's byte
writers, :mod:`currant.payload`'s msgpack rules, and the policy callers see.

The core (compiled or twin, see :mod:`currant._impl`) does the bytes; this
module adds the policy: the size cap, and an error that names the argument
msgpack could not encode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import _impl
from .errors import PayloadError, PayloadTooLarge

if TYPE_CHECKING:  # type checkers read the pure modules, the readable spec of the compiled ones
    from . import _core_py as _typed_core
    from . import payload
else:
    _typed_core = _impl.core
    payload = _impl.payload

COPY_HEADER: bytes = _typed_core.COPY_HEADER
COPY_TRAILER: bytes = _typed_core.COPY_TRAILER
write_job_rows = _typed_core.write_job_rows
# enqueue_many's fast path: None where the careful path must look.
pack_plain_args = _typed_core.pack_plain_args
pack_int8_array = _typed_core.pack_int8_array
pack_int4_array = _typed_core.pack_int4_array
decode_claimed = payload.decode_claimed
pack_headers = payload.pack_headers
pack_value = payload.pack_value
unpack_value = payload.unpack_value
unpack_payload = payload.unpack_payload
pack_payload = payload.pack_payload  # raw: no size cap, no argument-level error (see encode_payload)

DEFAULT_MAX_PAYLOAD = payload.DEFAULT_MAX_SIZE


def core_name() -> str:
    """Which core encodes: "compiled" or "pure Python" (see currant._impl)."""
    return "compiled" if _impl.__impl__ == "c" else "pure Python"


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)

__all__ = [
    "COPY_HEADER",
    "COPY_TRAILER",
    "DEFAULT_MAX_PAYLOAD",
    "PayloadError",
    "decode_claimed",
    "encode_payload",
    "encode_result",
    "pg_micros",
    "unpack_payload",
    "unpack_value",
    "write_job_rows",
]


def encode_payload(
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    max_size: int = DEFAULT_MAX_PAYLOAD,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """msgpack ``[args, kwargs(, headers)]``; TypeError names the argument that cannot be encoded."""
    try:
        encoded = payload.pack_payload(args, kwargs, headers)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _name_bad_argument(args, kwargs, exc) from exc
    if len(encoded) > max_size:
        raise PayloadTooLarge(
            f"payload is {len(encoded)} bytes, over the {max_size}-byte cap"
            " (raise App(max_payload_size=...) or pass a reference to the data instead)"
        )
    return encoded


def encode_result(value: Any) -> bytes:
    """msgpack of a task's return value; TypeError says so in plain words."""
    try:
        return payload.pack_value(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"task returned a {type(value).__name__}, which msgpack cannot encode: {exc}") from exc


def pg_micros(moment: datetime) -> int:
    """A timezone-aware datetime as PostgreSQL's binary timestamptz (µs since 2000-01-01 UTC)."""
    if moment.tzinfo is None:
        raise ValueError(f"run_at {moment!r} has no timezone; pass an aware datetime")
    delta = moment - _PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _name_bad_argument(args: Sequence[Any], kwargs: Mapping[str, Any] | None, cause: Exception) -> TypeError:
    if not isinstance(args, (list, tuple)):
        return TypeError(f"args must be a tuple or list, not {type(args).__name__}")
    for index, value in enumerate(args):
        try:
            payload.pack_value(value)
        except Exception as exc:  # noqa: BLE001 - any failure pinpoints the argument
            return TypeError(f"argument {index} ({type(value).__name__}) cannot be encoded as msgpack: {exc}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        return TypeError(f"kwargs must be a mapping, not {type(kwargs).__name__}")
    for key, value in (kwargs or {}).items():
        if not isinstance(key, str):
            return TypeError(f"keyword argument names must be str, got {key!r}")
        try:
            payload.pack_value(value)
        except Exception as exc:  # noqa: BLE001
            return TypeError(f"keyword argument {key!r} ({type(value).__name__}) cannot be encoded as msgpack: {exc}")
    return TypeError(f"arguments cannot be encoded as msgpack: {cause}")
