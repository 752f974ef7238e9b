"""What the admin CLI prints: tables, one job in full, the live ``top`` screen.

Pure formatting: values in, text out. JSON output is :func:`to_json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

from .job import STATES, Job

# Cells of a table are cut to this width; ``show`` never cuts anything.
CELL_WIDTH = 80
WAITING_STATES = ("queued", "scheduled", "retrying")


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(widths[i]) for i, column in enumerate(columns)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(value.ljust(widths[i]) for i, value in enumerate(line)).rstrip() for line in cells]
    return "\n".join(lines)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    text = str(value).replace("\n", " ")
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 3] + "..."


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def list_columns(state: str) -> list[str]:
    """A waiting job's interesting time is when it runs; a finished one's, when it ended."""
    when = "run_at" if state in WAITING_STATES else "finished_at"
    return ["id", "task", "queue", "state", "attempts", "enqueued_at", when, "last_error"]


def job_detail(job: Job) -> str:
    """One job in full: arguments, result, and every attempt's error and traceback, uncut."""
    lines = [f"job {job.id}: {job.task} on queue {job.queue}, {job.state}"]
    limit = job.max_attempts if job.max_attempts is not None else "the task's limit"
    lines.append(f"  attempts     {job.attempts} of {limit}; rescued {job.rescues} times; priority {job.priority}")
    for name in ("enqueued_at", "run_at", "started_at", "finished_at"):
        value = getattr(job, name)
        if value is not None:
            lines.append(f"  {name:<12} {_utc(value)} UTC")
    if job.worker_id is not None:
        lines.append(f"  worker       {job.worker_id}")
    if job.unique_key is not None:
        lines.append(f"  unique_key   {job.unique_key}")
    if job.cancel_requested:
        lines.append("  cancel requested")
    if job.payload_error is not None:
        lines.append(f"  arguments    (cannot be decoded: {job.payload_error})")
    else:
        lines.append(f"  args         {_readable(list(job.args or ()))}")
        lines.append(f"  kwargs       {_readable(job.kwargs or {})}")
    if job.progress is not None:
        report = job.progress
        of = f" of {report['total']:g}" if report.get("total") is not None else ""
        note = f": {report['note']}" if report.get("note") else ""
        lines.append(
            f"  progress     {report.get('done', 0):g}{of}{note} (attempt {report.get('attempt')},"
            f" reported {report.get('at')})"
        )
    if job.state == "succeeded":
        lines.append(f"  result       {_readable(job.result)}")
    for entry in job.errors:
        at = entry.get("at")
        lines.append(f"  attempt {entry.get('attempt')} failed at {at}: {entry.get('error')}")
        if entry.get("traceback"):
            lines.extend("    " + line for line in str(entry["traceback"]).rstrip().splitlines())
    return "\n".join(lines)


def _readable(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def to_json(value: Any) -> str:
    if isinstance(value, Job):
        value = {f.name: getattr(value, f.name) for f in fields(value)}
    return json.dumps(value, default=_json_default, indent=2, ensure_ascii=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes_hex": bytes(value).hex()}
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def top_screen(
    stats: Mapping[str, Any],
    workers: Sequence[Mapping[str, Any]],
    rates: Mapping[str, tuple[float, float]],
    now: datetime,
) -> str:
    """The ``top`` view: per queue, counts and jobs/s in and out; then the workers."""
    lines = [f"currant top  {_utc(now)} UTC  (Ctrl-C to quit)", ""]
    rows = []
    for queue, entry in sorted(stats["queues"].items()):
        states = entry["states"]
        in_rate, out_rate = rates.get(queue, (0.0, 0.0))
        rows.append(
            {
                "queue": queue,
                "ready": states["queued"],
                "running": states["running"],
                "scheduled": states["scheduled"] + states["retrying"],
                "failed": states["failed"],
                "in/s": f"{in_rate:,.0f}",
                "out/s": f"{out_rate:,.0f}",
                "oldest ready": "" if entry["oldest_queued_age"] is None else f"{entry['oldest_queued_age']:.1f} s",
            }
        )
    lines.append(table(rows, ["queue", "ready", "running", "scheduled", "failed", "in/s", "out/s", "oldest ready"]))
    lines += ["", f"{len(workers)} workers"]
    lines.append(table(workers, ["id", "hostname", "pid", "queues", "concurrency", "running", "silent_for"]))
    return "\n".join(lines)


def rates_between(
    before: Mapping[str, Any], after: Mapping[str, Any], seconds: float
) -> dict[str, tuple[float, float]]:
    """Jobs/s in and out per queue between two stats snapshots: in = growth of
    every state together plus what finished; out = growth of the finished states
    (pruning can only make these read low, never high)."""
    rates: dict[str, tuple[float, float]] = {}
    finished = ("succeeded", "failed", "cancelled")
    for queue, entry in after["queues"].items():
        old = before["queues"].get(queue, {"states": dict.fromkeys(STATES, 0)})["states"]
        new = entry["states"]
        out = sum(new[s] - old[s] for s in finished)
        total = sum(new.values()) - sum(old.values())
        rates[queue] = (max(0.0, total / seconds), max(0.0, out / seconds))
    return rates
