"""msgpack payloads and results: the one definition of what Currant writes and accepts.

Both core implementations use this module: the msgpack rules live here once.
msgpack's own C extension does the bytes; what is Currant's is the policy:

* a job payload is the array ``[args, kwargs]`` with str keywords, or
  ``[args, kwargs, headers]`` where headers (str to str: a trace context, say)
  travel with the job but are not arguments; a result is any single value;
* written with ``use_bin_type=True`` and no ExtTypes or timestamps;
* read strictly: ExtTypes (timestamps included) are refused, every length
  limit is bounded by the payload's own size (so a header claiming a 4 GiB
  container fails before anything is allocated), and every failure is one
  :class:`PayloadError` whose text can be stored on the job.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack  # msgpack ships no type information
from msgpack.exceptions import ExtraData, FormatError, StackError

# Defined in errors so that the compiled build of this file raises the same class.
from .errors import PayloadError

DEFAULT_MAX_SIZE: int = 1 << 20

# What the decoders accept (psycopg may hand bytea over as memoryview).
BytesLike = bytes | bytearray | memoryview

# A claimed job, decoded: (id, attempt, task, args, kwargs, payload_error,
# headers, queue, max_attempts, waited); args and kwargs are None when
# payload_error says why the payload is unusable; max_attempts is the job's
# own (None: the task's applies); waited is seconds from run_at to the claim.
Decoded = tuple[
    int,
    int,
    str,
    "tuple[Any, ...] | None",
    "dict[str, Any] | None",
    "str | None",
    "dict[str, str] | None",
    str,
    "int | None",
    float,
]


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------

# One Packer per thread: reusing one avoids allocating its buffer on every
# call, but a Packer is not safe to share between threads (its buffer is
# mutable state, and packing a dict subclass runs Python code mid-pack).
_tls = threading.local()


def _packer() -> msgpack.Packer:
    try:
        return _tls.packer
    except AttributeError:
        packer = _tls.packer = msgpack.Packer(autoreset=True, use_bin_type=True, strict_types=False, datetime=False)
        return packer


def _pack(obj: Any) -> bytes:
    try:
        return _packer().pack(obj)  # type: ignore[no-any-return]
    except (OverflowError, ValueError) as exc:
        # msgpack reports ints beyond 64 bits as OverflowError and cycles or
        # over-deep nesting as ValueError; to callers they are all "this value
        # cannot be encoded", which is TypeError (like unsupported types).
        raise TypeError(f"cannot encode as msgpack: {exc}") from exc


def pack_payload(
    args: Sequence[Any], kwargs: Mapping[str, Any] | None, headers: Mapping[str, str] | None = None
) -> bytes:
    """msgpack of ``[list(args), dict(kwargs or {})]`` (``+ [headers]`` when given);
    TypeError if it cannot be encoded."""
    if type(args) is not list and type(args) is not tuple:
        if isinstance(args, (str, bytes, bytearray)):
            raise TypeError(f"args must be a list or tuple, not {type(args).__name__}")
        args = list(args)
    if kwargs is None:
        kw: dict[str, Any] = {}
    else:
        kw = kwargs if type(kwargs) is dict else dict(kwargs)
        for key in kw:
            if not isinstance(key, str):
                raise TypeError(f"kwargs key {key!r} is not a str")
    if headers:
        return _pack([args, kw, _check_headers(headers)])
    return _pack([args, kw])


def pack_headers(headers: Mapping[str, str]) -> bytes:
    """The third element of a payload on its own, for bulk enqueue to append."""
    return _pack(_check_headers(headers))


def _check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    checked = dict(headers)
    for key, value in checked.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"headers map str to str, got {key!r}: {value!r}")
    return checked


def is_plain_args(item: Any) -> bool:
    """An ``enqueue_many`` item that is an args tuple, not an ``(args, kwargs)`` pair."""
    return type(item) is tuple and not (
        len(item) == 2 and isinstance(item[0], (tuple, list)) and isinstance(item[1], dict)
    )


def pack_plain_args(items: Iterable[Any], max_size: int, headers: bytes = b"") -> list[bytes | None]:
    """``pack_payload(item, None)`` for every plain args tuple that encodes
    within ``max_size``; None for every other item, which the caller encodes
    the careful way (and which names the item if it is bad). ``headers``, if
    given, is :func:`pack_headers`'s output, appended to every payload."""
    out: list[bytes | None] = []
    append = out.append
    no_kwargs: dict[str, Any] = {}
    for item in items:
        packed = None
        if is_plain_args(item):
            try:
                packed = _pack([item, no_kwargs])
                if headers:
                    packed = b"\x93" + packed[1:] + headers  # [args, kwargs] -> [args, kwargs, headers]
            except Exception:  # noqa: BLE001 - the careful path reports it
                packed = None
            if packed is not None and len(packed) > max_size:
                packed = None
        append(packed)
    return out


def pack_value(value: Any) -> bytes:
    """msgpack of a single value (a task's result); TypeError if it cannot be encoded."""
    return _pack(value)


# --------------------------------------------------------------------------
# reading (strict)
# --------------------------------------------------------------------------

# A msgpack timestamp is ExtType -1, which msgpack decodes itself without
# calling ext_hook. Every encoding of it holds one of these byte pairs
# (fixext4/fixext8/ext8-of-12 followed by type 0xff), and all of them hold
# 0xff: data without that byte (one memchr) needs no closer look.
_TIMESTAMP_MARKERS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def _reject_ext(code: int, data: bytes) -> Any:
    raise PayloadError(f"msgpack ExtType {code} is not allowed")


def _failure(exc: BaseException) -> PayloadError:
    """Translate an exception from ``msgpack.unpackb`` into a PayloadError."""
    if isinstance(exc, PayloadError):
        return exc
    if isinstance(exc, ExtraData):
        return PayloadError(f"{len(exc.extra)} bytes of trailing data after the msgpack value")
    if isinstance(exc, (StackError, RecursionError)):
        return PayloadError("nesting deeper than msgpack allows")
    if isinstance(exc, FormatError):
        return PayloadError("invalid msgpack: reserved or malformed type byte")
    if isinstance(exc, UnicodeDecodeError):
        return PayloadError(f"invalid UTF-8 in a string at byte {exc.start}: {exc.reason}")
    msg = str(exc)
    if "incomplete input" in msg:
        return PayloadError("truncated msgpack data")
    if "exceeds max_" in msg:
        # The limits are the payload's own length, so a header claiming more
        # items or bytes than that is truncated data or a size bomb.
        return PayloadError(f"truncated msgpack data: a length header claims more than the payload holds ({msg})")
    return PayloadError(f"invalid msgpack: {msg}")


def _has_timestamp(value: Any) -> bool:
    """Whether a decoded value contains a msgpack Timestamp (iterative walk)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(item)
        elif type(item) is dict:
            stack.extend(item.values())  # keys are str or bytes (strict_map_key)
        elif type(item) is msgpack.Timestamp:
            return True
    return False


def _may_hold_timestamp(data: bytes) -> bool:
    return b"\xff" in data and any(marker in data for marker in _TIMESTAMP_MARKERS)


def _unpack(data: Any, max_size: int) -> Any:
    if type(data) is not bytes:
        if not isinstance(data, (bytearray, memoryview)):
            raise PayloadError(f"payload must be bytes, not {type(data).__name__}")
        data = bytes(data)
    n = len(data)
    if n > max_size:
        raise PayloadError(f"payload is {n} bytes, over the {max_size}-byte cap")
    try:
        # An element takes at least one byte and a map entry two, so no
        # honest payload exceeds these limits.
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_reject_ext,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n // 2,
            max_ext_len=n,
        )
    except (ValueError, RecursionError, msgpack.UnpackException) as exc:
        raise _failure(exc) from None
    if _may_hold_timestamp(data) and _has_timestamp(value):
        raise PayloadError("msgpack ExtType -1 (timestamp) is not allowed")
    return value


def _shape_failure(value: Any) -> PayloadError | None:
    """Why a decoded value is not ``[args: list, kwargs: dict[str, Any](, headers: dict[str, str])]``
    (None if it is)."""
    if type(value) is not list:
        return PayloadError(f"top level must be a 2-element array [args, kwargs], not {type(value).__name__}")
    if len(value) == 3:
        headers = value[2]
        if type(headers) is not dict or any(type(k) is not str or type(v) is not str for k, v in headers.items()):
            return PayloadError("headers (the third element) must be a map of str to str")
        value = value[:2]
    if len(value) != 2:
        return PayloadError(f"top level must be a 2-element array [args, kwargs], not an array of {len(value)}")
    args, kwargs = value
    if type(args) is not list:
        return PayloadError(f"args must be an array, not {type(args).__name__}")
    if type(kwargs) is not dict:
        return PayloadError(f"kwargs must be a map, not {type(kwargs).__name__}")
    for key in kwargs:
        if type(key) is not str:
            return PayloadError(f"kwargs keys must be str, not {type(key).__name__} ({key!r})")
    return None


def unpack_payload(data: BytesLike, max_size: int = DEFAULT_MAX_SIZE) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Strictly decode a job payload into ``(args, kwargs)``; PayloadError (only) if malformed."""
    args, kwargs, _headers = unpack_envelope(data, max_size)
    return args, kwargs


def unpack_envelope(
    data: BytesLike, max_size: int = DEFAULT_MAX_SIZE
) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, str] | None]:
    """Strictly decode a job payload into ``(args, kwargs, headers or None)``."""
    value = _unpack(data, max_size)
    failure = _shape_failure(value)
    if failure is not None:
        raise failure
    return tuple(value[0]), value[1], value[2] if len(value) == 3 else None


def unpack_value(data: BytesLike, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Strictly decode a single value (a result): as strict as a payload, without the shape rule."""
    return _unpack(data, max_size)


def decode_claimed(rows: Iterable[Sequence[Any]], queue: str, max_size: int = DEFAULT_MAX_SIZE) -> list[Decoded]:
    """Decode claimed rows of ``queue``: (id, attempt, task, payload, max_attempts,
    waited, pass_results, input_ids, inputs), and any columns after those.

    A job that waited for parents and asked for their results gets them: the
    parent's result first among its arguments (``pass_results`` 'f'), or a
    ``results`` keyword mapping each parent's id to its result ('k'). A
    malformed payload (or result) never raises and never affects the other
    rows: its row comes back with args and kwargs None and the reason.
    """
    out: list[Decoded] = []
    append = out.append
    unpackb = msgpack.unpackb
    reject_ext = _reject_ext
    for row in rows:
        job_id, attempt, task, payload, max_attempts, waited = row[0], row[1], row[2], row[3], row[4], row[5]
        pass_results = row[6]
        # The fast path: the common payload, [args, {}] or [args, {str: ...}],
        # without 0xff (so without a timestamp), decoded with the very limits
        # of _unpack. Anything else, or any doubt, goes the canonical way
        # (unpack_envelope), which decides and names what is wrong.
        if type(payload) is bytes and (n := len(payload)) <= max_size and b"\xff" not in payload:
            try:
                value = unpackb(
                    payload,
                    raw=False,
                    strict_map_key=True,
                    use_list=True,
                    ext_hook=reject_ext,
                    max_str_len=n,
                    max_bin_len=n,
                    max_array_len=n,
                    max_map_len=n // 2,
                    max_ext_len=n,
                )
            except Exception:  # noqa: BLE001 - the canonical path below says what is wrong
                value = None
            if type(value) is list and len(value) == 2 and pass_results is None:
                args, kwargs = value
                if type(args) is list and type(kwargs) is dict:
                    for key in kwargs:  # strict_map_key lets bytes keys through: a kwarg is a str
                        if type(key) is not str:
                            break
                    else:
                        append((job_id, attempt, task, tuple(args), kwargs, None, None, queue, max_attempts, waited))
                        continue
        try:
            args, kwargs, headers = unpack_envelope(payload, max_size)
            if pass_results is not None:
                args, kwargs = _with_inputs(pass_results, args, kwargs, row[7] or [], row[8] or [], max_size)
        except PayloadError as exc:
            append((job_id, attempt, task, None, None, str(exc), None, queue, max_attempts, waited))
        else:
            append((job_id, attempt, task, args, kwargs, None, headers, queue, max_attempts, waited))
    return out


def _with_inputs(
    how: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ids: Sequence[int],
    results: Sequence[Any],
    max_size: int,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    pairs = zip(ids, results, strict=True)
    values = {parent: None if data is None else _unpack(data, max_size) for parent, data in pairs}
    if how == "f":
        return (next(iter(values.values()), None), *args), kwargs
    return args, {**kwargs, "results": values}
