"""Enqueue plans: one job in one round trip, many by binary COPY.

Every argument is validated and encoded when the plan is made, before any
I/O; a bad item of a bulk enqueue is named and nothing is inserted. The plans
run on either driver (:mod:`currant.plans`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from . import codec
from .dependency import Dependency, depend_steps
from .errors import CurrantError
from .job import Item
from .limits import Limit, check_key
from .names import check_name
from .plans import Plan

# Bulk enqueue sends COPY data in chunks of about this size: big enough that
# per-message overhead vanishes, small enough that the server starts inserting
# early and the next chunk is built while it does.
COPY_CHUNK_BYTES = 256 << 10
# Ids are reserved and rows encoded this many at a time.
ENQUEUE_BATCH = 50_000
# A unique-key conflict with a row this snapshot cannot see yet is retried.
UNIQUE_RETRIES = 20
_LIVE_KEY_CONFLICT_RETRY = "unique key holder not visible yet"


class JobOptions(NamedTuple):
    """Everything but the arguments, resolved against the task's defaults."""

    task: str
    queue: str
    priority: int
    max_attempts: int | None  # None: the worker's task setting decides
    limit: Limit | None = None  # the task's limits, when the producer knows the task
    task_known: bool = False  # the producer has the task registered


def _delay_seconds(delay: float | timedelta | None) -> float:
    if delay is None:
        return 0.0
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f"delay must be a non-negative number of seconds, got {delay!r}")
    return seconds


def _check_run_at(run_at: datetime | None, delay: float | timedelta | None) -> None:
    if run_at is not None:
        if delay is not None:
            raise ValueError("pass run_at or delay, not both")
        if not isinstance(run_at, datetime) or run_at.tzinfo is None:
            raise ValueError(f"run_at must be a timezone-aware datetime, got {run_at!r}")


def _check_unique_key(unique_key: Any) -> str | None:
    if unique_key is None:
        return None
    if not isinstance(unique_key, str) or not unique_key or "\x00" in unique_key:
        raise ValueError(f"unique_key must be a non-empty str without NUL, got {unique_key!r}")
    return unique_key


def _check_max_attempts(max_attempts: int | None) -> int | None:
    if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
        raise ValueError(f"max_attempts must be a whole number of at least 1, got {max_attempts!r}")
    return max_attempts


def _check_priority(priority: int) -> int:
    if not isinstance(priority, int) or not -32768 <= priority <= 32767:
        raise ValueError(f"priority must be an int from -32768 to 32767, got {priority!r}")
    return priority


def plan_enqueue(
    sql: Mapping[str, str],
    channel: str,
    options: JobOptions,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    *,
    run_at: datetime | None,
    delay: float | timedelta | None,
    unique_key: str | None,
    max_payload: int,
    headers: Mapping[str, str] | None = None,
    dependency: Dependency | None = None,
    limit_key: str | None = None,
) -> Plan:
    """Validate and encode now (before any I/O), then one INSERT+NOTIFY round
    trip (and the depend statement, for a job that waits for parents: then
    the plan must run in a transaction)."""
    _check_run_at(run_at, delay)
    _check_waiting(dependency, run_at, delay, unique_key)
    params = {
        "queue": check_name("queue", options.queue),
        "task": check_name("task", options.task),
        "payload": codec.encode_payload(args, kwargs, max_payload, headers),
        "priority": _check_priority(options.priority),
        "max_attempts": _check_max_attempts(options.max_attempts),
        "run_at": run_at,
        "delay": _delay_seconds(delay),
        "unique_key": _check_unique_key(unique_key),
        "channel": channel,
        "waiting": dependency is not None,
        "limit_key": job_limit_key(options, limit_key, args, kwargs),
    }
    return _enqueue_steps(sql, channel, params, dependency)


def job_limit_key(options: JobOptions, given: Any, args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> str | None:
    """A job's key under its task's limits: the one given at enqueue, else the
    task's (from the arguments, or '' for a task-wide limit); None: unlimited.
    A task the producer does not know gets its key from the worker (hand_to_limits)."""
    if given is not None:
        if options.limit is None and options.task_known:
            raise ValueError(f"task {options.task!r} has no rate_limit or max_running: limit_key means nothing")
        return check_key(given)
    return None if options.limit is None else options.limit.key_for(args, kwargs)


def _check_waiting(
    dependency: Dependency | None, run_at: datetime | None, delay: float | timedelta | None, unique_key: Any
) -> None:
    if dependency is not None and (run_at is not None or delay is not None or unique_key is not None):
        raise ValueError("a job with depends_on runs when its parents are done: no run_at, delay or unique_key")


def _enqueue_steps(sql: Mapping[str, str], channel: str, params: dict[str, Any], dependency: Dependency | None) -> Plan:
    for _ in range(UNIQUE_RETRIES):
        row = yield ("one", sql["enqueue_one"], params)
        if row is not None:
            if dependency is not None:
                yield from depend_steps(sql, channel, [int(row[0])], dependency)
            return int(row[0])
    raise CurrantError(f"unique_key {params['unique_key']!r}: {_LIVE_KEY_CONFLICT_RETRY} after {UNIQUE_RETRIES} tries")


class _Prepared(NamedTuple):
    payload: bytes
    priority: int
    delay: float | None
    run_at: datetime | None
    unique_key: str | None


ItemLike = Item | Sequence[Any]


def _prepare_item(
    index: int, item: Any, default_priority: int, max_payload: int, headers: Mapping[str, str] | None
) -> _Prepared:
    """Split one ``enqueue_many`` item into its parts; errors name the item."""
    try:
        if isinstance(item, Item):
            _check_run_at(item.run_at, item.delay)
            priority = default_priority if item.priority is None else _check_priority(item.priority)
            return _Prepared(
                codec.encode_payload(item.args, item.kwargs, max_payload, headers),
                priority,
                None if item.delay is None else _delay_seconds(item.delay),
                item.run_at,
                _check_unique_key(item.unique_key),
            )
        if (
            isinstance(item, (tuple, list))
            and len(item) == 2
            and isinstance(item[0], (tuple, list))
            and isinstance(item[1], dict)
        ):
            payload = codec.encode_payload(item[0], item[1], max_payload, headers)
        elif isinstance(item, (tuple, list)):
            payload = codec.encode_payload(item, None, max_payload, headers)
        else:
            raise TypeError(
                f"expected an args tuple, an (args, kwargs) pair or a currant.Item, got {type(item).__name__}"
            )
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"item {index}: {exc}") from exc
    return _Prepared(payload, default_priority, None, None, None)


def plan_enqueue_many(
    sql: Mapping[str, str],
    channel: str,
    options: JobOptions,
    items: Iterable[ItemLike],
    *,
    max_payload: int,
    headers: Mapping[str, str] | None = None,
    dependency: Dependency | None = None,
    limit_key: str | None = None,
) -> Plan:
    """Encode every item first (a bad one inserts nothing and is named), then
    reserve ids, COPY, and notify each queue once. Must run in a transaction.
    ``headers`` (a trace context) go with every job; with ``dependency``,
    every job waits for the same parents; ``limit_key`` is every job's key
    under the task's limits (else each job's own, from its arguments)."""
    check_name("queue", options.queue)
    check_name("task", options.task)
    _check_priority(options.priority)
    _check_max_attempts(options.max_attempts)
    item_list = items if type(items) is list else list(items)
    # The common case, plain args tuples, is encoded by the core in one call;
    # any other shape (or an error) takes the careful path, which names the item.
    encoded = codec.pack_plain_args(item_list, max_payload, codec.pack_headers(headers) if headers else b"")
    special: dict[int, _Prepared] = {}  # items with their own options, by position
    for index in _none_positions(encoded):
        item = item_list[index]
        prepared = _prepare_item(index, item, options.priority, max_payload, headers)
        encoded[index] = prepared.payload
        if isinstance(item, Item):
            _check_waiting(dependency, prepared.run_at, prepared.delay, prepared.unique_key)
            special[index] = prepared
    keys = _limit_keys(options, limit_key, item_list)
    return _enqueue_many_steps(sql, channel, options, encoded, special, dependency, keys)  # type: ignore[arg-type]


def _limit_keys(options: JobOptions, given: str | None, items: list[Any]) -> list[str] | None:
    """Each item's key under the task's limits (None: the task is not limited)."""
    if given is not None or options.limit is None or options.limit.key is None:
        key = job_limit_key(options, given, (), None)
        return None if key is None else [key] * len(items)
    keys = []
    for index, item in enumerate(items):
        if isinstance(item, Item):
            args, kwargs = item.args, item.kwargs
        elif len(item) == 2 and isinstance(item[0], (tuple, list)) and isinstance(item[1], dict):
            args, kwargs = item
        else:
            args, kwargs = item, None
        try:
            keys.append(options.limit.key_for(args, kwargs))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"item {index}: {exc}") from exc
    return keys


def _none_positions(values: list[Any]) -> Iterator[int]:
    if None not in values:  # the common case, scanned at C speed
        return
    for index, value in enumerate(values):
        if value is None:
            yield index


def _enqueue_many_steps(
    sql: Mapping[str, str],
    channel: str,
    options: JobOptions,
    payloads: list[bytes],
    special: dict[int, _Prepared],
    dependency: Dependency | None,
    limit_keys: list[str] | None,
) -> Plan:
    if not payloads:
        return []
    uses_keys = any(p.unique_key is not None for p in special.values())
    all_ids: list[int] = []
    earliest_scheduled: float | None = None
    waiting = dependency is not None  # every job waits for the same parents
    any_ready = len(special) < len(payloads) and not waiting  # a plain item is ready now, unless it waits
    queue, task, priority, max_attempts = options.queue, options.task, options.priority, options.max_attempts
    if uses_keys:
        yield ("rowcount", sql["create_stage"], None)
        yield ("rowcount", sql["clear_stage"], None)
    for start in range(0, len(payloads), ENQUEUE_BATCH):
        batch = payloads[start : start + ENQUEUE_BATCH]
        if uses_keys:  # staged rows need their ids up front
            db_now, ids = yield ("one_binary", sql["reserve_ids"], {"n": len(batch)})
        else:  # the COPY draws them
            db_now, before = yield ("one", sql["bulk_start"], None)
        now_us = codec.pg_micros(db_now)
        # Items with their own options, as whole rows by position in the batch;
        # the plain rows are made while the COPY streams (_copy_chunks).
        overrides: dict[int, tuple[Any, ...]] = {}
        for index in range(start, start + len(batch)):
            p = special.get(index)
            if p is None:
                continue
            if p.run_at is not None:
                run_at_us = codec.pg_micros(p.run_at)
            elif p.delay:
                run_at_us = now_us + int(p.delay * 1_000_000)
            else:
                run_at_us = now_us
            if waiting:
                state = "waiting"
            elif run_at_us > now_us:
                state = "scheduled"
                due = db_now.timestamp() + (run_at_us - now_us) / 1e6
                earliest_scheduled = due if earliest_scheduled is None else min(earliest_scheduled, due)
            else:
                state = "queued"
                any_ready = True
            overrides[index - start] = (
                queue,
                task,
                p.payload,
                p.priority,
                max_attempts,
                run_at_us,
                state,
                p.unique_key,
            )
        plain = (queue, task, priority, max_attempts, now_us, "waiting" if waiting else "queued")
        if uses_keys:
            yield ("copy", sql["copy_stage"], _copy_chunks(batch, plain, overrides, ids))
        else:
            yield ("copy", sql["copy_jobs"], _copy_chunks(batch, plain, overrides))
            last, ids = yield ("one_binary", sql["bulk_ids"], {"before": before, "n": len(batch)})
            if ids is None:  # nothing else drew from the sequence meanwhile
                ids = range(before + 1, last + 1)
            elif len(ids) != len(batch):  # pragma: no cover - a broken invariant, not a state
                raise RuntimeError(f"bulk enqueue: {len(batch)} rows went in, {len(ids)} ids came back")
        all_ids.extend(ids)
    if uses_keys:
        all_ids = yield from _insert_staged(sql, [special.get(i) for i in range(len(payloads))], all_ids)
    if limit_keys is not None:
        yield ("rowcount", sql["set_limit_keys"], {"ids": all_ids, "keys": limit_keys})
    if dependency is not None:
        yield from depend_steps(sql, channel, all_ids, dependency)
    if any_ready:
        yield ("one", sql["notify"], {"channel": channel, "payload": f"r:{queue}"})
    if earliest_scheduled is not None:
        yield ("one", sql["notify"], {"channel": channel, "payload": f"d:{earliest_scheduled}:{queue}"})
    return all_ids


def _insert_staged(sql: Mapping[str, str], prepared: list[_Prepared | None], reserved: list[int]) -> Plan:
    """Move staged rows into jobs; a duplicate key resolves to the live job's id."""
    answer = list(reserved)
    pending = {
        job_id: p.unique_key
        for job_id, p in zip(reserved, prepared, strict=True)
        if p is not None and p.unique_key is not None
    }
    for _ in range(UNIQUE_RETRIES):
        inserted = {row[0] for row in (yield ("all", sql["insert_from_stage"], None))}
        for job_id in inserted:
            pending.pop(job_id, None)
        if not pending:
            return answer
        holders = dict((yield ("all", sql["resolve_unique"], {"keys": sorted(set(pending.values()))})))
        for position, job_id in enumerate(reserved):
            key = pending.get(job_id)
            if key is not None and key in holders:
                answer[position] = holders[key]
                del pending[job_id]
        if not pending:
            return answer
    raise CurrantError(f"unique keys {sorted(set(pending.values()))[:5]}: {_LIVE_KEY_CONFLICT_RETRY}")


def _copy_chunks(
    payloads: list[bytes],
    plain: tuple[Any, ...],
    overrides: dict[int, tuple[Any, ...]],
    ids: list[int] | None = None,
) -> Iterator[bytes]:
    """The binary COPY stream: header, rows, trailer, in chunks of ~COPY_CHUNK_BYTES.

    Rows are made and encoded a step at a time while the COPY runs, so the
    server inserts one chunk while the next is being built. ``plain`` is
    (queue, task, priority, max_attempts, run_at, state) of every row not in
    ``overrides`` (whole rows without an id, by position). With ``ids``
    (the stage's), each row starts with its id."""
    queue, task, priority, max_attempts, run_at, state = plain
    out = bytearray(codec.COPY_HEADER)
    step = 2_000
    for start in range(0, len(payloads), step):
        rows: list[tuple[Any, ...]] = [
            (queue, task, payload, priority, max_attempts, run_at, state, None)
            for payload in payloads[start : start + step]
        ]
        if overrides:
            for offset in range(len(rows)):
                row = overrides.get(start + offset)
                if row is not None:
                    rows[offset] = row
        if ids is not None:
            rows = [(job_id, *row) for job_id, row in zip(ids[start : start + step], rows, strict=True)]
        codec.write_job_rows(out, rows)
        if len(out) >= COPY_CHUNK_BYTES:
            yield bytes(out)
            out.clear()
    out += codec.COPY_TRAILER
    yield bytes(out)
