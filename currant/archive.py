"""The opt-in archive of succeeded jobs, partitioned by finish time (0009_archive).

By default a succeeded job stays in ``jobs`` until retention deletes it, a
dead tuple per job for vacuum. With the archive on, workers move each success
(with its result; not one that another job waits for, nor a group member)
into ``archive`` as they record it, and retention drops whole partitions of it:

* :func:`enable` writes the layout and creates the first partitions; workers
  pick it up at their next rotation (every :data:`ROTATE_EVERY_BEATS`
  heartbeats, a minute by default) or when they start;
* :func:`rotate`, run by the workers, creates partitions :data:`AHEAD` steps
  ahead and drops those that ended more than the retention ago;
* :func:`status` says what the archive holds.

Everything that reads jobs (``get_job``, ``list_jobs``, ``stats``, the
dashboard) reads the view ``jobs_all``, live and archived jobs alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .plans import Plan

# Partitions created ahead of the one holding "now": a worker that rotates
# every minute (see below) keeps this many steps in hand.
AHEAD = 3
# How often a worker rotates (and learns whether the archive is on), in
# heartbeats: every minute at the default --heartbeat of 5 s.
ROTATE_EVERY_BEATS = 12
# A partition shorter than a minute would make rotation outpace itself.
MIN_PARTITION_SECONDS = 60


def enable(sql: Mapping[str, str], partition_seconds: int) -> Plan:
    """Turn the archive on; returns how many partitions were created now."""
    if not isinstance(partition_seconds, int) or partition_seconds < MIN_PARTITION_SECONDS:
        raise ValueError(
            f"partition_seconds must be a whole number of at least {MIN_PARTITION_SECONDS}, got {partition_seconds!r}"
        )
    yield ("rowcount", sql["archive_enable"], {"seconds": partition_seconds})
    row = yield ("one", sql["archive_rotate"], {"keep": None, "ahead": AHEAD})
    return int(row[1])


def disable(sql: Mapping[str, str]) -> Plan:
    """Turn the archive off; returns whether it was on."""
    return bool((yield ("rowcount", sql["archive_disable"], None)))


def rotate(sql: Mapping[str, str], keep_seconds: float) -> Plan:
    """One round of partition upkeep; returns (enabled, created, dropped, purged)."""
    row = yield ("one", sql["archive_rotate"], {"keep": keep_seconds, "ahead": AHEAD})
    return bool(row[0]), int(row[1]), int(row[2]), int(row[3])


def status(sql: Mapping[str, str]) -> Plan:
    """The layout and the partitions: {"enabled", "partition_seconds", "enabled_at", "partitions": [...]}."""
    rows = yield ("all", sql["archive_status"], None)
    seconds, enabled_at = rows[0][0], rows[0][1]
    partitions: list[dict[str, Any]] = [
        {"partition": name, "bounds": bounds, "rows_estimate": rows_estimate, "bytes": size}
        for _seconds, _at, name, bounds, rows_estimate, size in rows
        if name is not None
    ]
    return {
        "enabled": seconds is not None,
        "partition_seconds": seconds,
        "enabled_at": enabled_at,
        "partitions": partitions,
    }
