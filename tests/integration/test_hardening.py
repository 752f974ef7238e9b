"""The review list of the first-hour issue: each item as a test that fails on the code before it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import currant
from currant.worker import completer
from tests.conftest import ROOT, wait_for


def test_the_clock_has_no_back_door(app: currant.App, database_dsn: str) -> None:
    """A stray currant.clock_offset moves nothing; only the schema owner's test clock obeys it."""
    schema = f'"{app.schema}"'
    with psycopg.connect(database_dsn, autocommit=True, options="-c currant.clock_offset=1h") as conn:
        drift = conn.execute(f"SELECT extract(epoch FROM {schema}.clock() - now())").fetchone()[0]  # type: ignore[index]
        assert drift == 0
        conn.execute(f"SELECT {schema}.use_test_clock(true)")
        drift = conn.execute(f"SELECT extract(epoch FROM {schema}.clock() - now())").fetchone()[0]  # type: ignore[index]
        assert drift == 3600
        conn.execute(f"SELECT {schema}.use_test_clock(false)")
        assert conn.execute(f"SELECT {schema}.clock() = now()").fetchone()[0]  # type: ignore[index]
        # A role that may use the schema but does not own it cannot turn the test clock on.
        role = f"currant_guest_{uuid.uuid4().hex[:8]}"
        conn.execute(f"CREATE ROLE {role}")
        try:
            conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            conn.execute(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {role}")
            conn.execute(f"SET ROLE {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT {schema}.use_test_clock(true)")
        finally:
            conn.execute("RESET ROLE")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def _backends(database_dsn: str, name: str) -> int:
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
        return int(row[0])  # type: ignore[index]


def test_the_async_pool_opens_once_and_close_closes_it(app: currant.App, database_dsn: str) -> None:
    name = f"pool_{uuid.uuid4().hex[:8]}"
    producer = currant.App(f"{database_dsn} application_name={name}", schema=app.schema)

    async def first_calls() -> None:
        await asyncio.gather(*(producer.astats() for _ in range(8)))  # all first: they race to open the pool
        # Let the pool finish growing before the loop ends: psycopg_pool retries
        # a connection attempt that asyncio.run's teardown cancels, and the
        # teardown then waits for it forever (async code should `async with app`).
        pool = producer._async._pool
        assert pool is not None
        while (stats := pool.get_stats())["pool_available"] < stats["pool_size"]:
            await asyncio.sleep(0.01)

    asyncio.run(first_calls())
    open_now = _backends(database_dsn, name)
    assert 1 <= open_now <= 8, open_now  # one pool (a second one would add its own connections)
    producer.close()  # sync close of the async pool, after its loop has gone
    wait_for(lambda: _backends(database_dsn, name) == 0, timeout=10, message="the async pool's connections closed")


def test_the_completer_s_pipeline_sync_point_exists() -> None:
    """pyproject pins psycopg to versions with Pipeline._enqueue_sync; this is the check that pin relies on."""
    assert completer._PIPELINE_SYNC


def test_schema_on_the_command_line_wins_over_the_app_s(app: currant.App, spawn_worker: Any, tmp_path: Path) -> None:
    (tmp_path / "fixed_schema_app.py").write_text(
        "import currant\napp = currant.App(schema='hardcoded_elsewhere')\n"
        "@app.task(name='noop')\ndef noop():\n    pass\n"
    )
    job = app.enqueue("noop")
    worker = spawn_worker(
        "--burst",
        "--schema",
        app.schema,
        app="fixed_schema_app:app",
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])},
    )
    assert worker.wait(60) == 0, worker.log()[-3000:]
    assert app.get_job(job).state == "succeeded"  # type: ignore[union-attr]


def test_an_abbreviated_processes_option_is_refused(spawn_worker: Any) -> None:
    """argparse took --proc for --processes and each child became a supervisor: a fork bomb."""
    worker = spawn_worker("--proc", "2")
    assert worker.wait(30) == 2
    assert "unrecognized arguments: --proc" in worker.log()


def test_children_get_the_dsn_through_their_environment(app: currant.App, spawn_worker: Any, database_dsn: str) -> None:
    secret = "s3cret-pw-" + uuid.uuid4().hex[:6]  # trust auth: any password is accepted
    dsn = make_conninfo(database_dsn, password=secret)
    supervisor = spawn_worker("--processes", "2", "--dsn", dsn)
    wait_for(lambda: len(psutil.Process(supervisor.pid).children()) == 2, message="two children")
    children = psutil.Process(supervisor.pid).children()
    for child in children:
        assert not any(secret in part for part in child.cmdline()), child.cmdline()
        assert "--processes" not in child.cmdline() and "--dsn" not in child.cmdline()
        assert secret in child.environ()["CURRANT_DSN"]
    wait_for(lambda: supervisor.log().count(" started (pid ") == 2, message="both children started")
    assert secret not in supervisor.log()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0


CRASHING_CHILD = """
import os, currant
app = currant.App()
if os.environ.get("CURRANT_SUPERVISED_CHILD") == "1 of 2":
    raise SystemExit(3)  # this slot's child dies at once, every time
@app.task(name="noop")
def noop():
    pass
"""


def test_a_crash_looping_child_does_not_block_the_supervisor(
    app: currant.App, spawn_worker: Any, tmp_path: Path
) -> None:
    """The supervisor's backoff for one slot never stops it watching the others, nor stopping."""
    (tmp_path / "crashing_child.py").write_text(CRASHING_CHILD)
    supervisor = spawn_worker(
        "--processes", "2", app="crashing_child:app", env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    )
    wait_for(lambda: "restarting in 4.0 s" in supervisor.log(), timeout=60, message="slot 0's backoff grew")
    healthy = [c for c in psutil.Process(supervisor.pid).children() if "crashing_child" in " ".join(c.cmdline())]
    wait_for(lambda: supervisor.log().count(" started (pid ") >= 1, message="the healthy child started")
    delays = [float(d) for d in re.findall(r"worker process 0 .* restarting in ([\d.]+) s", supervisor.log())]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0], delays
    # Slot 1's child is killed while slot 0 waits out its 4 s: it is replaced at once.
    victim = next(c for c in healthy if c.is_running() and c.environ().get("CURRANT_SUPERVISED_CHILD") == "2 of 2")
    victim.kill()
    wait_for(
        lambda: re.search(r"worker process 1 \(pid \d+\) exited with -9; restarting in 0.5 s", supervisor.log()),
        timeout=5,
        message="slot 1's death noticed while slot 0 waits",
    )
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(5) == 0, supervisor.log()[-3000:]


def test_worker_loop_is_one_psycopg_supports_on_every_platform() -> None:
    from currant.cli import event_loop_factory, run_async

    assert event_loop_factory("win32") is asyncio.SelectorEventLoop
    assert event_loop_factory("linux") is None and event_loop_factory("darwin") is None

    async def running_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    assert isinstance(run_async(running_loop(), platform="win32"), asyncio.SelectorEventLoop)


def test_wheels_are_configured_for_cpython_3_10_to_3_14() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    build = re.search(r'^build = "([^"]+)"', pyproject, re.MULTILINE)
    assert build and build.group(1).split() == [f"cp3{minor}-*" for minor in range(10, 15)], build
    assert re.search(r'"Cython>=3\.(\d+)"', pyproject) and int(re.search(r'"Cython>=3\.(\d+)"', pyproject)[1]) >= 1
    action = re.search(r"pypa/cibuildwheel@v(\d+)\.(\d+)", (ROOT / ".github/workflows/wheels.yml").read_text())
    assert action and (int(action[1]), int(action[2])) >= (3, 1), action  # 3.1: the first with CPython 3.14
