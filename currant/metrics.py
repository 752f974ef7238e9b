"""The queue's health from the database, as Prometheus metrics: one scraper per cluster.

``python -m currant metrics --port N`` serves them (and the dashboard's
``/metrics``). Every scrape runs the few statements of
``currant/sql/metrics.sql``, each of which reads a partial index, the
workers' rows or PostgreSQL's statistics views, never the finished jobs that
make up most of a busy table (BENCHMARKS.md measures a scrape on a million
jobs). The workers' own numbers (jobs finished, durations, waits) come from
their ``--metrics-port``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .plans import Plan
from .sql import quote_schema

if TYPE_CHECKING:
    from .app import App

STATES = ("waiting", "queued", "scheduled", "retrying", "failed", "cancelled")


def snapshot(sql: dict[str, str], schema: str) -> Plan:
    """Everything a scrape reports, in one plan (five short statements)."""
    jobs = yield ("all", sql["metrics_waiting_jobs"], None)
    oldest = yield ("all", sql["metrics_oldest_ready"], None)
    workers, running = yield ("one", sql["metrics_workers"], None)
    table_bytes, dead, archive_bytes = yield (
        "one",
        sql["metrics_table"],
        {"table": f"{quote_schema(schema)}.jobs", "archive": f"{quote_schema(schema)}.archive"},
    )
    xmin_age, notify_usage = yield ("one", sql["metrics_server"], None)
    return {
        "jobs": jobs,
        "oldest": oldest,
        "workers": workers,
        "running": running,
        "table_bytes": table_bytes,
        "dead_tuples": dead,
        "archive_bytes": archive_bytes,
        "xmin_age": xmin_age,
        "notify_usage": notify_usage,
    }


class DatabaseCollector:
    """prometheus_client's collector protocol, over one App's database."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        return families(self.app.run_plan(snapshot(self.app.sql, self.app.schema)))


class Snapshot:
    """A collector over a snapshot already read (the dashboard reads it on its async pool)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def collect(self) -> Iterator[Any]:
        return families(self.data)


def exposition(data: dict[str, Any]) -> bytes:
    """A snapshot in Prometheus' text format."""
    from prometheus_client import CollectorRegistry, generate_latest

    collectors = CollectorRegistry()
    collectors.register(Snapshot(data))
    return bytes(generate_latest(collectors))


def families(data: dict[str, Any]) -> Iterator[Any]:
    """The metric families of one snapshot."""
    from prometheus_client.core import GaugeMetricFamily

    jobs = GaugeMetricFamily(
        "currant_queue_jobs",
        "Jobs per queue in each state still to run, and failed or cancelled ones kept.",
        labels=["queue", "state"],
    )
    counts: dict[tuple[str, str], int] = {}
    for queue, state, count in data["jobs"]:  # queued jobs come in two parts (limited or not)
        counts[queue, state] = counts.get((queue, state), 0) + count
    for queue in sorted({queue for queue, _ in counts}):
        for state in STATES:
            jobs.add_metric([queue, state], counts.get((queue, state), 0))
    yield jobs
    oldest = GaugeMetricFamily(
        "currant_queue_oldest_ready_seconds",
        "How long the next job of each queue has been ready.",
        labels=["queue"],
    )
    for queue, seconds in data["oldest"]:
        oldest.add_metric([queue], max(0.0, seconds))
    yield oldest
    yield GaugeMetricFamily("currant_workers_alive", "Registered workers (heartbeating).", value=data["workers"])
    yield GaugeMetricFamily(
        "currant_workers_running_jobs", "Jobs the workers held at their last heartbeat.", value=data["running"]
    )
    yield GaugeMetricFamily(
        "currant_jobs_table_bytes", "The jobs table on disk, with indexes and TOAST.", value=data["table_bytes"]
    )
    yield GaugeMetricFamily("currant_jobs_dead_tuples", "Dead tuples in the jobs table.", value=data["dead_tuples"])
    yield GaugeMetricFamily(
        "currant_archive_bytes",
        "The archive of succeeded jobs on disk, all partitions (0 when it is off).",
        value=data["archive_bytes"],
    )
    yield GaugeMetricFamily(
        "currant_oldest_xmin_age_seconds",
        "Age of the oldest transaction holding back vacuum.",
        value=data["xmin_age"],
    )
    yield GaugeMetricFamily(
        "currant_notify_queue_usage_ratio",
        "pg_notification_queue_usage(): 1.0 is full.",
        value=data["notify_usage"],
    )


def registry(app: App) -> Any:
    """A prometheus_client registry holding the database collector (for an ASGI or WSGI app)."""
    from prometheus_client import CollectorRegistry

    collectors = CollectorRegistry()
    collectors.register(DatabaseCollector(app))  # a collector by protocol: it has collect()
    return collectors


def serve(app: App, port: int, host: str = "0.0.0.0") -> None:
    """Serve the database metrics on ``port`` until interrupted."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=registry(app))
    try:
        thread.join()
    finally:
        server.shutdown()
