"""Plans that read and steer jobs: get, cancel, retry, stats, list, purge.

Each is written once and run by either driver (see :mod:`currant.plans`);
arguments are checked when the plan is made, before any I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import codec
from .job import STATES, Job
from .names import check_job_id
from .plans import Plan

# States whose jobs a worker may still run: purging them needs a clear intent.
LIVE_STATES = ("waiting", "queued", "scheduled", "retrying")
PURGEABLE_STATES = tuple(state for state in STATES if state != "running")


def get_job(sql: Mapping[str, str], job_id: int) -> Plan:
    params = {"id": check_job_id(job_id)}
    return _get_job(sql["get_job"], params)


def _get_job(statement: str, params: dict[str, Any]) -> Plan:
    row = yield ("one", statement, params)
    return job_from_row(row)


def cancel(sql: Mapping[str, str], channel: str, job_id: int) -> Plan:
    params = {"id": check_job_id(job_id), "channel": channel}
    return _cancel(sql["cancel"], params)


def _cancel(statement: str, params: dict[str, Any]) -> Plan:
    row = yield ("one", statement, params)
    if row is None:
        return "not_found"
    before, changed, _notified = row
    if not changed:
        return f"already_{before}"
    return "cancel_requested" if before == "running" else "cancelled"


def retry(sql: Mapping[str, str], channel: str, job_id: int) -> Plan:
    params = {"id": check_job_id(job_id), "channel": channel}
    return _retry(sql["retry"], params)


def _retry(statement: str, params: dict[str, Any]) -> Plan:
    return (yield ("one", statement, params)) is not None


def stats(sql: Mapping[str, str]) -> Plan:
    rows = yield ("all", sql["stats"], None)
    return stats_from_rows(rows)


def list_jobs(sql: Mapping[str, str], state: str, queue: str | None, task: str | None, limit: int) -> Plan:
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}; one of {', '.join(STATES)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a whole number of at least 1, got {limit!r}")
    return _rows(sql["list_jobs"], {"state": state, "queue": queue, "task": task, "limit": limit})


def list_workers(sql: Mapping[str, str]) -> Plan:
    return _rows(sql["list_workers"], None)


def list_limits(sql: Mapping[str, str]) -> Plan:
    return _rows(sql["list_limits"], None)


def _rows(statement: str, params: dict[str, Any] | None) -> Plan:
    """All rows, each a dict by column name."""
    cursor_rows, names = yield ("all_named", statement, params)
    return [dict(zip(names, row, strict=True)) for row in cursor_rows]


def purge(sql: Mapping[str, str], state: str, queue: str | None, older_than: float | None) -> Plan:
    if state not in PURGEABLE_STATES:
        raise ValueError(f"cannot purge state {state!r}; one of {', '.join(PURGEABLE_STATES)}")
    return _purge(sql["purge"], {"state": state, "queue": queue, "older_than": older_than})


def _purge(statement: str, params: dict[str, Any]) -> Plan:
    row = yield ("one", statement, params)
    return int(row[0])


def job_from_row(row: Sequence[Any] | None) -> Job | None:
    if row is None:
        return None
    (
        job_id,
        task,
        queue,
        state,
        attempts,
        max_attempts,
        priority,
        result,
        errors,
        enqueued_at,
        started_at,
        finished_at,
        run_at,
        cancel_requested,
        unique_key,
        rescues,
        worker_id,
        db_now,
        payload,
        progress,
    ) = row
    if state == "queued" and run_at > db_now:
        state = "scheduled"
    errors = errors or []
    last = errors[-1] if errors else None
    error = None
    if last is not None and state in ("failed", "retrying", "cancelled"):
        error = last.get("error")
        if last.get("traceback"):
            error = f"{error}\n{last['traceback']}"
    return Job(
        id=job_id,
        task=task,
        queue=queue,
        state=state,
        attempts=attempts,
        max_attempts=max_attempts,
        priority=priority,
        result=None if result is None else codec.unpack_value(bytes(result)),
        error=error,
        errors=errors,
        enqueued_at=enqueued_at,
        started_at=started_at,
        finished_at=finished_at,
        run_at=run_at,
        cancel_requested=cancel_requested,
        unique_key=unique_key,
        rescues=rescues,
        worker_id=worker_id,
        progress=progress,
        **_arguments(payload),
    )


def _arguments(payload: Any) -> dict[str, Any]:
    try:
        args, kwargs = codec.unpack_payload(bytes(payload))
    except codec.PayloadError as exc:
        return {"payload_error": str(exc)}
    return {"args": args, "kwargs": kwargs}


def stats_from_rows(rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    queues: dict[str, dict[str, Any]] = {}
    for queue, state, count, oldest in rows:
        entry = queues.setdefault(queue, {"states": dict.fromkeys(STATES, 0), "oldest_queued_age": None})
        entry["states"][state] = count
        if oldest is not None:
            entry["oldest_queued_age"] = float(oldest)
    totals = dict.fromkeys(STATES, 0)
    for entry in queues.values():
        for state, count in entry["states"].items():
            totals[state] += count
    return {"queues": queues, "totals": totals}
