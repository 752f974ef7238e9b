"""A newcomer's first hour: the README's quick-start as written, task names
that resolve, a worker that says what it does, and stopping.

The quick-start is read from README.md itself (the blocks marked
``<!-- readme-test: ... -->``), so the README cannot drift from what runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

import currant
from tests.conftest import ROOT, state_counts, wait_for

README = ROOT / "README.md"


def readme_block(marker: str) -> str:
    """The fenced code block right after ``<!-- readme-test: {marker} -->`` in README.md."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- readme-test: {re.escape(marker)} -->\n```[a-z]*\n(.*?)```", text, re.DOTALL)
    assert match, f"README.md has no block marked {marker!r}"
    return match.group(1)


def _env(database_dsn: str, schema: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CURRANT_DSN": database_dsn,
        "CURRANT_SCHEMA": schema,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def _run(command: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    args = command.split()
    assert args[0] == "python", command
    return subprocess.run(
        [sys.executable, *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_readme_quick_start_runs_as_written(
    database_dsn: str, schema_name: str, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    """Saved as a file and run as a script (it enqueues), then imported by the
    worker as a module (it must not enqueue again): every job succeeds."""
    (tmp_path / "quickstart.py").write_text(readme_block("file quickstart.py"), encoding="utf-8")
    env = _env(database_dsn, schema_name)
    commands = [line.split("#", 1)[0].strip() for line in readme_block("commands").splitlines()]
    outputs = {}
    for command in filter(None, commands):
        proc = _run(command, tmp_path, env)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr[-3000:])
        outputs[command] = proc
    assert state_counts(db, schema_name) == {"succeeded": 1002}
    tasks = dict(db.execute(f'SELECT task, count(*) FROM "{schema_name}".jobs GROUP BY 1').fetchall())
    assert tasks == {"quickstart.add": 1001, "quickstart.send_welcome": 1}
    show = next(proc.stdout for command, proc in outputs.items() if " show " in command)
    assert show.startswith("job 1: quickstart.add on queue default, succeeded"), show
    assert re.search(r"^\s+result\s+3$", show, re.MULTILINE), show


def _script_task_name(tmp_path: Path, *how: str) -> subprocess.CompletedProcess[str]:
    package = tmp_path / "pkg"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    code = (
        "import currant\napp = currant.App(dsn='postgresql://unused@127.0.0.1:1/x')\n"
        "@app.task\ndef add(a, b):\n    return a + b\nprint(sorted(app.tasks))\n"
    )
    (package / "jobs.py").write_text(code)
    (tmp_path / "my_script.py").write_text(code)
    return subprocess.run(
        [sys.executable, *how],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_script_names_its_tasks_as_a_worker_imports_it(tmp_path: Path) -> None:
    assert _script_task_name(tmp_path, "my_script.py").stdout.strip() == "['my_script.add']"
    assert _script_task_name(tmp_path, "-m", "pkg.jobs").stdout.strip() == "['pkg.jobs.add']"
    # No file to import (python -c, a REPL): the name must be given, and the error says how.
    proc = _script_task_name(tmp_path, "-c", (tmp_path / "my_script.py").read_text())
    assert proc.returncode == 1 and "pass a name (@app.task(name=...))" in proc.stderr, proc.stderr


def test_the_worker_says_what_it_does(app: currant.App, spawn_worker: Any, db: psycopg.Connection[Any]) -> None:
    """Start-up line, a WARNING per failed attempt, an ERROR with the traceback
    at the final failure, a WARNING the first time a task is unknown, and an
    exit summary by outcome."""
    failing = app.enqueue("fail", ("boom",))  # max_attempts 3, backoff 0.2 s
    unknown = [app.enqueue("nope") for _ in range(2)]
    fine = app.enqueue("noop")
    worker = spawn_worker("--poll-interval", "0.1")
    wait_for(
        lambda: app.get_job(failing).state == "failed" and app.get_job(fine).state == "succeeded",  # type: ignore[union-attr]
        timeout=60,
        message="the failing job failed for good",
    )
    wait_for(
        lambda: all(app.get_job(job).state == "retrying" for job in unknown),  # type: ignore[union-attr]
        message="the unknown task's jobs wait for a worker that knows it",
    )
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]
    log = worker.log()
    started = next(line for line in log.splitlines() if " started (pid " in line)
    assert "for tests.apps.jobs:app on " in started and f"schema {app.schema}:" in started, started
    assert "queues default, async" in started and "concurrency 4" in started, started
    assert "tasks: add, announce_slowly, arecord, " in started, started
    for attempt in (1, 2):
        assert re.search(
            rf"WARNING currant.worker: job {failing} \(fail\) attempt {attempt}/3 failed: "
            r"ValueError: boom; retrying in \d",
            log,
        ), log[-3000:]
    final = log.split(f"ERROR currant.worker: job {failing} (fail) failed for good after 3 attempts: ValueError: boom")
    assert len(final) == 2 and final[1].lstrip("\n").startswith("Traceback (most recent call last):"), log[-3000:]
    assert log.count("which this worker does not know") == 1, log[-3000:]
    summary = next(line for line in log.splitlines() if line.startswith("currant worker: "))
    assert summary.endswith(": 1 succeeded, 1 failed, 4 retried, 0 cancelled"), summary


def test_a_default_worker_serves_every_queue_its_tasks_declare(app: currant.App, spawn_worker: Any) -> None:
    job = app.enqueue("arecord", ("k",), queue="async")  # the queue the task declares in the worker
    assert spawn_worker("--burst").wait(60) == 0
    assert app.get_job(job).state == "succeeded"  # type: ignore[union-attr]
    # --queues still restricts.
    other = app.enqueue("arecord", ("k2",), queue="async")
    assert spawn_worker("--burst", "--queues", "default").wait(60) == 0
    assert app.get_job(other).state == "queued"  # type: ignore[union-attr]


def test_json_logs(app: currant.App, spawn_worker: Any) -> None:
    app.enqueue("fail", ("once",), max_attempts=1)
    worker = spawn_worker("--burst", "--log-format", "json")
    assert worker.wait(60) == 0, worker.log()[-3000:]
    lines = [line for line in worker.log().splitlines() if line and not line.startswith("currant worker: ")]
    entries = [json.loads(line) for line in lines]  # every log line is one JSON object
    assert {"time", "level", "logger", "message", "pid"} <= set(entries[0])
    failure = next(e for e in entries if e["level"] == "ERROR")
    assert "failed for good" in failure["message"] and "Traceback" in failure["message"], failure


def test_sigterm_stops_an_idle_worker_at_once(app: currant.App, spawn_worker: Any) -> None:
    worker = spawn_worker()
    wait_for(lambda: " started (pid " in worker.log(), message="the worker started")
    worker.signal(signal.SIGTERM)
    assert worker.wait(5) == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()


def test_sigterm_stops_a_worker_that_cannot_reach_its_database(spawn_worker: Any) -> None:
    """Whatever the database's state: here it was never reachable."""
    worker = spawn_worker(env={"CURRANT_DSN": "postgresql://postgres@127.0.0.1:1/nothing"})
    wait_for(lambda: "connection lost" in worker.log(), message="the worker tried and failed to connect")
    worker.signal(signal.SIGTERM)
    assert worker.wait(5) == 0, worker.log()[-3000:]
    log = worker.log()
    assert "Traceback" not in log and "GaveUp" not in log, log[-3000:]
    assert log.count("connection lost") == 1, log[-3000:]  # one line per change of state, not per attempt


@pytest.mark.parametrize(
    "dsn, reason",
    [
        ("postgresql://no_such_role_x@127.0.0.1:5432/postgres", 'role "no_such_role_x" does not exist'),
        ("postgresql://postgres@127.0.0.1:5432/no_such_db_x", 'database "no_such_db_x" does not exist'),
        ("notadsn", "malformed DSN"),
    ],
    ids=["role", "database", "malformed"],
)
def test_a_refused_first_connection_ends_the_worker_in_one_line(dsn: str, reason: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "currant.worker", "tests.apps.jobs:app", "--dsn", dsn],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=10,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode in (1, 2), proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line or "error:" in line]
    assert len(errors) == 1 and reason in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_burst_gives_up_on_an_unreachable_database(spawn_worker: Any) -> None:
    worker = spawn_worker("--burst", "--db-timeout", "1", env={"CURRANT_DSN": "postgresql://postgres@127.0.0.1:1/x"})
    assert worker.wait(30) == 1, worker.log()[-3000:]
    log = worker.log()
    assert "has been unreachable for" in log and "Traceback" not in log, log[-3000:]
