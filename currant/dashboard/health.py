"""The health page's judgement: the things that quietly ruin a PostgreSQL
queue, each with a threshold and a warning in plain words.

Pure: the readings of :func:`currant.dashboard.reads.health_view` in, a list
of checks out. The thresholds are named here, and the README lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Dead row versions: a queue table churns, so some are normal; past this share
# of the table (and this many), claims step over them and slow down.
DEAD_SHARE = 0.20
DEAD_MIN = 10_000
# Vacuum that has not run for this long on a table with dead rows is stuck or held back.
VACUUM_STALE_SECONDS = 3600.0
# A snapshot this many transactions old keeps vacuum from removing anything newer.
XMIN_AGE_WARN = 1_000_000
# A transaction open this long (idle in transaction, a long report) holds vacuum back.
XACT_SECONDS_WARN = 300.0
# NOTIFY's queue fills when a listening session stops reading; when it is full,
# every NOTIFY (so every enqueue) fails.
NOTIFY_WARN = 0.25
# Connections in use, of those ordinary roles may open.
CONNECTIONS_WARN = 0.80


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    ok: bool
    advice: str  # what it means, in plain words


def checks(reading: Mapping[str, Any], now: datetime) -> list[Check]:
    return [_dead_rows(reading), _vacuum(reading, now), _oldest_xmin(reading), _notify(reading), _connections(reading)]


def _dead_rows(reading: Mapping[str, Any]) -> Check:
    table = reading["table"]
    if table is None:
        return Check("Jobs table size", "no statistics yet", True, "PostgreSQL has not counted this table yet.")
    live, dead = int(table["live"] or 0), int(table["dead"] or 0)
    share = dead / (live + dead) if live + dead else 0.0
    value = f"{_bytes(table['total_bytes'])} with indexes; {live:,} live rows, {dead:,} dead ({share:.0%})"
    if dead >= DEAD_MIN and share >= DEAD_SHARE:
        return Check(
            "Jobs table size",
            value,
            False,
            f"More than {DEAD_SHARE:.0%} of the table is dead rows: vacuum is not keeping up (or something "
            "holds it back, see below). Claims step over dead rows, so they slow down as these pile up.",
        )
    return Check("Jobs table size", value, True, "Dead rows are few: vacuum keeps up.")


def _vacuum(reading: Mapping[str, Any], now: datetime) -> Check:
    table = reading["table"]
    if table is None:
        return Check("Last vacuum", "unknown", True, "")
    last = max((t for t in (table["last_autovacuum"], table["last_vacuum"]) if t is not None), default=None)
    value = "never" if last is None else f"{_ago(now, last)} ago ({table['autovacuum_count']} autovacuums)"
    dead = int(table["dead"] or 0)
    stale = last is None or (now - last).total_seconds() > VACUUM_STALE_SECONDS
    if stale and dead >= DEAD_MIN:
        return Check(
            "Last vacuum",
            value,
            False,
            f"The table has {dead:,} dead rows and vacuum has not run for over an hour: check that "
            "autovacuum is on and that no old transaction holds it back.",
        )
    return Check("Last vacuum", value, True, "Autovacuum visits the table.")


def _oldest_xmin(reading: Mapping[str, Any]) -> Check:
    oldest = reading["oldest"]
    if oldest is None or oldest["xmin_age"] is None:
        return Check("Oldest transaction", "none open", True, "Nothing holds vacuum back.")
    age = int(oldest["xmin_age"])
    who = oldest["kind"]
    if oldest["pid"] is not None:
        who += f" pid {oldest['pid']}"
    if oldest["application_name"]:
        who += f" ({oldest['application_name']})"
    seconds = oldest["xact_seconds"]
    value = f"{who}: {age:,} transaction{'' if age == 1 else 's'} old" + (
        f", open {_duration(seconds)}" if seconds is not None else ""
    )
    if age >= XMIN_AGE_WARN or (seconds is not None and seconds >= XACT_SECONDS_WARN):
        return Check(
            "Oldest transaction",
            value,
            False,
            "This transaction (or slot) keeps vacuum from removing any row that died after it began: "
            "the jobs table and its indexes grow and claims slow down until it ends. Finish or "
            "terminate it (pg_terminate_backend) if it is not needed.",
        )
    return Check("Oldest transaction", value, True, "No long transaction holds vacuum back.")


def _notify(reading: Mapping[str, Any]) -> Check:
    usage = float(reading["notify_usage"])
    value = f"{usage:.1%} of the NOTIFY queue used"
    if usage >= NOTIFY_WARN:
        return Check(
            "NOTIFY queue",
            value,
            False,
            "A session that LISTENs is not reading its notifications (often one stuck in a long "
            "transaction). When the queue is full every NOTIFY fails, and so does every enqueue.",
        )
    return Check("NOTIFY queue", value, True, "Listeners keep up.")


def _connections(reading: Mapping[str, Any]) -> Check:
    usable = max(1, int(reading["max_connections"]) - int(reading["reserved_connections"]))
    used = int(reading["connections"])
    share = used / usable
    value = f"{used} of {usable} ({share:.0%})"
    if share >= CONNECTIONS_WARN:
        return Check(
            "Connections",
            value,
            False,
            "The server is close to its connection limit: new workers, producers or this dashboard "
            "will be refused. Each worker process holds four; a pooler (PgBouncer) or fewer "
            "processes help.",
        )
    return Check("Connections", value, True, "Room for more clients.")


def _bytes(n: Any) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TiB"


def _ago(now: datetime, then: datetime) -> str:
    return _duration((now - then).total_seconds())


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
