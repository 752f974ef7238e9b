"""The dashboard's plans: what each page reads, and the bulk actions.

Written like :mod:`currant.control` (a plan per operation, run by the App's
async driver through ``App.arun_plan``) on the statements of
``currant/sql/dashboard.sql``; see that file for why each is shaped so. The
single-job actions are :mod:`currant.control`'s own ``retry`` and ``cancel``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from croniter import croniter

from .. import control
from ..plans import Plan
from .filters import JobFilter

# A count that may be large stops here and is shown as "at least".
COUNT_CAP = 100_000
# The states of jobs still to run (a job "waiting" for its parents among them).
WAITING = ("waiting", "queued", "scheduled", "retrying")
FINISHED_OUTCOMES = ("succeeded", "failed", "cancelled")
# The task and error filters look at this many of the newest jobs passing the
# indexed filters per page (see dash_jobs).
SEARCH_WINDOW = 2_000
PAGE_SIZE = 50
BULK_BATCH = 1_000
# The confirmation page counts up to this many (finding each needs its row).
BULK_COUNT_CAP = 2_000
RECENT_DEATHS = 50


def overview_counts(dsql: Mapping[str, str], cap: int = COUNT_CAP) -> Plan:
    """Waiting jobs per queue and state (capped), the oldest ready job's age,
    and the failed and cancelled jobs in the table."""
    waiting = yield ("all", dsql["dash_waiting_counts"], {"cap": cap})
    finished = yield ("all", dsql["dash_finished_totals"], {"cap": cap})
    queues: dict[str, dict[str, Any]] = {}
    for queue, state, jobs, capped, oldest in waiting:
        entry = queues.setdefault(queue, empty_queue_entry())
        entry["states"][state] += int(jobs)  # queued jobs come in two rows: limited tasks' and the rest
        if capped:
            entry["capped"].add(state)
        if oldest is not None:
            entry["oldest_age"] = max(float(oldest), entry["oldest_age"] or 0.0)
    totals = {state: int(jobs) for state, jobs in finished}
    return {"queues": queues, "finished": totals, "cap": cap}


def empty_queue_entry() -> dict[str, Any]:
    return {"states": dict.fromkeys(WAITING, 0), "capped": set(), "oldest_age": None}


def overview_activity(dsql: Mapping[str, str]) -> Plan:
    """The last hour by queue and outcome, the rates of the last five minutes, and the chart's minutes."""
    rows = yield ("all", dsql["dash_activity"], None)
    chart_rows = yield ("all", dsql["dash_throughput"], None)
    pulse = yield ("one", dsql["dash_pulse"], None)
    queues: dict[str, dict[str, Any]] = {}
    window = 300.0
    for queue, outcome, hour, recent, recent_seconds in rows:
        entry = queues.setdefault(queue, {"hour": {}, "recent_finished": 0})
        entry["hour"][outcome] = int(hour or 0)
        if outcome in FINISHED_OUTCOMES:
            entry["recent_finished"] += int(recent or 0)
        window = float(recent_seconds)
    before = chart_rows[0][3] if chart_rows and chart_rows[0][0] is None else None
    minutes = [row for row in chart_rows if row[0] is not None]
    sequence_now = int(pulse[0]) if pulse else None
    chart = minute_series(minutes, before, sequence_now)
    enqueued_recent = sum(point["enqueued"] for point in chart[-5:])
    for entry in queues.values():
        entry["out_rate"] = entry["recent_finished"] / window if window > 0 else 0.0
    return {
        "queues": queues,
        "chart": chart,
        "window": window,
        "sequence": sequence_now,
        "in_rate": enqueued_recent / window if window > 0 else 0.0,
        "out_rate": sum(e["recent_finished"] for e in queues.values()) / window if window > 0 else 0.0,
    }


def minute_series(
    rows: Sequence[Sequence[Any]], mark_before: int | None, sequence_now: int | None
) -> list[dict[str, Any]]:
    """Per minute: finished, failed, and enqueued (the id mark's growth; the
    current minute is measured against the sequence itself). A minute without
    a mark carries the previous one (no worker held the maintenance lock then):
    its jobs show up in the next minute that has one."""
    series: list[dict[str, Any]] = []
    previous = mark_before
    for index, (minute, finished, failed, mark) in enumerate(rows):
        if index == len(rows) - 1 and sequence_now is not None:
            mark = max(mark or 0, sequence_now)
        enqueued = 0 if previous is None or mark is None else max(0, int(mark) - int(previous))
        if mark is not None:
            previous = mark
        series.append({"minute": minute, "finished": int(finished), "failed": int(failed), "enqueued": enqueued})
    return series


def job_page(dsql: Mapping[str, str], where: JobFilter, limit: int = PAGE_SIZE, window: int = SEARCH_WINDOW) -> Plan:
    """One page of the job list and where the next one starts."""
    searching = where.task is not None or where.error is not None
    scan = window if searching else limit + 1
    rows, names = yield (
        "all_named",
        dsql["dash_jobs"],
        {
            "state": where.state,
            "queue": where.queue,
            "task": where.task,
            "pattern": where.pattern(),
            "before": where.before,
            "window": scan,
            "limit": limit + 1,
        },
    )
    records = [dict(zip(names, row, strict=True)) for row in rows]
    scanned = int(records[0]["scanned"]) if records else 0
    lowest = records[0]["lowest"] if records else None
    jobs = [r for r in records if r["id"] is not None]
    for job in jobs:
        if job["state"] == "queued" and job["run_at"] > job["db_now"]:
            job["state"] = "scheduled"  # as control.job_from_row says it
    next_before: int | None = None
    if len(jobs) > limit:
        jobs = jobs[:limit]
        next_before = int(jobs[-1]["id"])
    elif searching and scanned >= scan and lowest is not None:
        next_before = int(lowest)  # the window ran out before the page filled: go on below it
    return {
        "jobs": jobs,
        "next_before": next_before,
        "searching": searching,
        "window": window,
        "scanned": scanned,
        "lowest": lowest,
    }


def bulk_states(action: str, where: JobFilter) -> list[str]:
    """Which states a bulk action touches under this filter; ValueError if none."""
    if action == "retry":
        if where.state not in ("failed", "cancelled"):
            raise ValueError("bulk retry needs the filter state=failed or state=cancelled")
        return [where.state]
    if action == "cancel":
        if where.state is None:
            return list(WAITING)
        if where.state not in WAITING:
            raise ValueError("bulk cancel needs a state of jobs still to run (waiting, queued, scheduled, retrying)")
        return [where.state]
    raise ValueError(f"unknown bulk action {action!r}")


def _bulk_params(action: str, where: JobFilter) -> dict[str, Any]:
    return {"states": bulk_states(action, where), "queue": where.queue, "task": where.task, "pattern": where.pattern()}


def bulk_count(dsql: Mapping[str, str], action: str, where: JobFilter, cap: int = BULK_COUNT_CAP) -> Plan:
    """(jobs matching now, whether the count stopped at ``cap``)."""
    params = {**_bulk_params(action, where), "cap": cap}
    row = yield ("one", dsql["dash_bulk_count"], params)
    return int(row[0]), int(row[0]) >= cap


def bulk_apply(dsql: Mapping[str, str], channel: str, action: str, where: JobFilter, batch: int = BULK_BATCH) -> Plan:
    """Retry or cancel every job the filter matches, a batch (one transaction) at a time; returns how many."""
    params = {**_bulk_params(action, where), "channel": channel, "batch": batch, "after": 0}
    statement = dsql["dash_bulk_retry" if action == "retry" else "dash_bulk_cancel"]
    changed = 0
    while True:
        examined, done, last_id, _woken = yield ("one", statement, params)
        changed += int(done)
        if not examined:
            return changed
        params["after"] = int(last_id)


def job_view(sql: Mapping[str, str], dsql: Mapping[str, str], job_id: int) -> Plan:
    job = yield from control.get_job(sql, job_id)
    worker = None
    if job is not None and job.worker_id is not None:
        row = yield ("one", dsql["dash_worker"], {"id": job.worker_id})
        worker = None if row is None else dict(zip(("status", "hostname", "pid", "last_seen"), row, strict=True))
    return {"job": job, "worker": worker}


def workers_view(sql: Mapping[str, str], dsql: Mapping[str, str], limit: int = RECENT_DEATHS) -> Plan:
    live = yield from control.list_workers(sql)
    rows, names = yield ("all_named", dsql["dash_worker_deaths"], {"limit": limit})
    return {"live": live, "dead": [dict(zip(names, row, strict=True)) for row in rows]}


def periodic_view(dsql: Mapping[str, str]) -> Plan:
    rows = yield ("all", dsql["dash_periodic"], None)
    schedules = []
    for name, schedule, last_tick, db_now in rows:
        schedules.append(
            {
                "name": name,
                "schedule": schedule,
                "last_tick": last_tick,
                "next_tick": next_tick(schedule, last_tick),
                "db_now": db_now,
            }
        )
    return {"schedules": schedules}


def next_tick(schedule: str, last_tick: datetime) -> datetime | None:
    """The tick after ``last_tick`` (cron, UTC, as workers compute it); None for an expression croniter refuses."""
    try:
        tick: datetime = croniter(schedule, last_tick).get_next(datetime)
    except (ValueError, KeyError):
        return None
    return tick


def health_view(dsql: Mapping[str, str]) -> Plan:
    table = yield ("one", dsql["dash_health_table"], None)
    xmin_rows, names = yield ("all_named", dsql["dash_health_xmin"], None)
    server = yield ("one", dsql["dash_health_server"], None)
    table_names = (
        "total_bytes",
        "table_bytes",
        "live",
        "dead",
        "last_autovacuum",
        "last_vacuum",
        "autovacuum_count",
        "last_autoanalyze",
        "modified_since_analyze",
    )
    return {
        "table": None if table is None else dict(zip(table_names, table, strict=True)),
        "oldest": dict(zip(names, xmin_rows[0], strict=True)) if xmin_rows else None,
        "notify_usage": float(server[0]),
        "connections": int(server[1]),
        "max_connections": int(server[2]),
        "reserved_connections": int(server[3]),
    }
