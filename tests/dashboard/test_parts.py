"""The dashboard's pure parts: health thresholds, the shared cache, the minute
series, the filter's escaping. No server, no database: values in, values out."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from currant.dashboard import health
from currant.dashboard.cache import TTLCache
from currant.dashboard.filters import BadFilter, JobFilter
from currant.dashboard.reads import minute_series

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def _reading(**changes: Any) -> dict[str, Any]:
    table = {
        "total_bytes": 10 * 2**20,
        "table_bytes": 8 * 2**20,
        "live": 100_000,
        "dead": 500,
        "last_autovacuum": NOW - timedelta(minutes=5),
        "last_vacuum": None,
        "autovacuum_count": 12,
        "last_autoanalyze": NOW,
        "modified_since_analyze": 10,
    }
    reading: dict[str, Any] = {
        "table": table,
        "notify_usage": 0.0,
        "connections": 10,
        "max_connections": 100,
        "reserved_connections": 3,
        "oldest": {
            "kind": "session",
            "pid": 77,
            "xmin_age": 12,
            "datname": "db",
            "usename": "u",
            "application_name": "app",
            "state": "active",
            "xact_seconds": 0.5,
            "query": "SELECT 1",
        },
    }
    for key, value in changes.items():
        if key in table:
            table[key] = value
        elif key in reading["oldest"]:
            reading["oldest"][key] = value
        else:
            reading[key] = value
    return reading


def _failing(reading: dict[str, Any]) -> set[str]:
    return {check.name for check in health.checks(reading, NOW) if not check.ok}


def test_a_healthy_database_has_no_warning() -> None:
    assert _failing(_reading()) == set()


@pytest.mark.parametrize(
    ("changes", "warned"),
    [
        ({"dead": 40_000}, {"Jobs table size"}),  # 29 % dead
        ({"dead": 20_000, "last_autovacuum": NOW - timedelta(hours=2)}, {"Last vacuum"}),  # 17 %: only stale
        ({"dead": 9_000, "last_autovacuum": None}, set()),  # few dead rows: never vacuumed is fine
        ({"xmin_age": 2_000_000}, {"Oldest transaction"}),
        ({"xact_seconds": 600.0}, {"Oldest transaction"}),
        ({"notify_usage": 0.3}, {"NOTIFY queue"}),
        ({"connections": 80}, {"Connections"}),  # 80 of 97 usable
        ({"connections": 77}, set()),
    ],
)
def test_each_threshold_warns_past_it_and_not_before(changes: dict[str, Any], warned: set[str]) -> None:
    assert _failing(_reading(**changes)) == warned


def test_the_warning_names_the_transaction_that_holds_vacuum_back() -> None:
    check = next(c for c in health.checks(_reading(xmin_age=5_000_000), NOW) if c.name == "Oldest transaction")
    assert "pid 77 (app)" in check.value and "5,000,000" in check.value and "pg_terminate_backend" in check.advice


def test_the_cache_computes_once_for_concurrent_readers_and_again_after_its_ttl() -> None:
    now = [0.0]
    cache = TTLCache(clock=lambda: now[0])
    calls = []

    async def compute() -> int:
        calls.append(1)
        await asyncio.sleep(0)  # let the other readers arrive while this one computes
        return len(calls)

    async def scenario() -> list[int]:
        first = await asyncio.gather(*(cache.get("k", 3.0, compute) for _ in range(5)))
        now[0] = 2.9
        cached = await cache.get("k", 3.0, compute)
        now[0] = 3.1
        fresh = await cache.get("k", 3.0, compute)
        return [*first, cached, fresh]

    assert asyncio.run(scenario()) == [1, 1, 1, 1, 1, 1, 2]


def test_a_failed_computation_is_not_cached() -> None:
    cache = TTLCache()
    attempts = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("database away")
        return "ok"

    async def scenario() -> str:
        with pytest.raises(RuntimeError):
            await cache.get("k", 60.0, flaky)
        return str(await cache.get("k", 60.0, flaky))

    assert asyncio.run(scenario()) == "ok"


def test_enqueued_per_minute_is_the_growth_of_the_id_marks() -> None:
    minutes = [NOW + timedelta(minutes=i) for i in range(4)]
    rows = [(minutes[0], 5, 0, 100), (minutes[1], 7, 1, None), (minutes[2], 0, 0, 160), (minutes[3], 2, 0, 170)]
    series = minute_series(rows, mark_before=90, sequence_now=175)
    assert [p["enqueued"] for p in series] == [10, 0, 60, 15]  # a minute without a mark shows in the next
    assert [p["finished"] for p in series] == [5, 7, 0, 2] and series[1]["failed"] == 1


def test_error_text_is_matched_literally() -> None:
    assert JobFilter(error="100%_done\\").pattern() == "%100\\%\\_done\\\\%"
    assert JobFilter().pattern() is None


@pytest.mark.parametrize(
    "query",
    [
        {"state": "exploded"},
        {"queue": "x" * 201},
        {"task": "a\x00b"},
        {"before": "-3"},
        {"before": "9" * 30},
        {"error": "e" * 201},
    ],
)
def test_bad_filters_are_refused_before_any_query(query: dict[str, str]) -> None:
    with pytest.raises(BadFilter):
        JobFilter.from_query(query)
