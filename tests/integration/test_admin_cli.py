"""``python -m currant``: what an operator needs, in full, in one line when it fails."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest

import currant
from tests.conftest import ROOT, state_counts, wait_for


def admin(dsn: str, schema: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "currant", "--dsn", dsn, "--schema", schema, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_show_prints_arguments_result_and_every_error_in_full(
    app: currant.App, spawn_worker: Any, database_dsn: str
) -> None:
    message = "x" * 150 + " <end of a long message>"
    job = app.enqueue("fail", (message,), {}, max_attempts=2)
    for _ in range(3):  # a burst worker leaves a retry waiting for its backoff: end it now
        assert spawn_worker("--burst").wait(60) == 0
        if app.get_job(job).state == "failed":  # type: ignore[union-attr]
            break
        with app.connect(autocommit=True) as conn:
            conn.execute(
                f"UPDATE \"{app.schema}\".jobs SET run_at = now(), state = 'queued'"
                " WHERE id = %s AND state = 'retrying'",
                (job,),
            )
    proc = admin(database_dsn, app.schema, "show", str(job))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f'args         ["{message}"]' in out and "kwargs       {}" in out, out
    for attempt in (1, 2):  # both attempts' errors, uncut
        assert re.search(rf"^  attempt {attempt} failed at .*: ValueError: {re.escape(message)}$", out, re.MULTILINE), (
            out
        )
    assert out.count("Traceback (most recent call last):") == 2 and "raise ValueError(message)" in out, out
    # --json after the command, as before it.
    after = json.loads(admin(database_dsn, app.schema, "show", str(job), "--json").stdout)
    before = json.loads(admin(database_dsn, app.schema, "--json", "show", str(job)).stdout)
    assert after == before and after["args"] == [message] and after["state"] == "failed"
    assert len(after["errors"]) == 2 and all(e["traceback"] for e in after["errors"])


def test_list_shows_when_waiting_jobs_run_and_filters(app: currant.App, database_dsn: str) -> None:
    soon = app.enqueue("noop", delay=3600)
    app.enqueue("add", (1, 2), delay=3600)
    app.enqueue("noop", queue="other", delay=3600)
    rows = json.loads(
        admin(database_dsn, app.schema, "list", "scheduled", "--task", "noop", "--queue", "default", "--json").stdout
    )
    assert [row["id"] for row in rows] == [soon] and rows[0]["run_at"], rows
    table = admin(database_dsn, app.schema, "list", "scheduled", "--limit", "1").stdout
    assert table.splitlines()[0].split() == [
        "id",
        "task",
        "queue",
        "state",
        "attempts",
        "enqueued_at",
        "run_at",
        "last_error",
    ], table
    assert len(table.splitlines()) == 3, table  # header, rule, one job
    bad = admin(database_dsn, app.schema, "list", "scheduled", "--limit", "0")
    assert bad.returncode == 2 and "at least 1" in bad.stderr


def test_retry_and_cancel_say_not_found(app: currant.App, database_dsn: str) -> None:
    queued = app.enqueue("noop")
    proc = admin(database_dsn, app.schema, "retry", "999999999", str(queued))
    assert proc.returncode == 1
    assert "999999999  not found" in proc.stdout and "not retried: it is queued" in proc.stdout, proc.stdout
    proc = admin(database_dsn, app.schema, "cancel", "999999999")
    assert proc.returncode == 1 and "not found" in proc.stdout, proc.stdout
    proc = admin(database_dsn, app.schema, "cancel", str(queued))
    assert proc.returncode == 0 and "cancelled" in proc.stdout


def test_purge_of_jobs_still_to_run_needs_yes(app: currant.App, database_dsn: str, db: psycopg.Connection[Any]) -> None:
    app.enqueue_many("noop", [()] * 5)
    for state in ("queued", "scheduled", "retrying"):
        proc = admin(database_dsn, app.schema, "purge", state)
        assert proc.returncode == 1 and "--yes" in proc.stderr, proc.stderr
    assert state_counts(db, app.schema) == {"queued": 5}
    proc = admin(database_dsn, app.schema, "purge", "queued", "--yes")
    assert proc.returncode == 0 and "deleted 5 queued jobs" in proc.stdout
    assert state_counts(db, app.schema) == {}


def test_workers_lists_the_live_ones(app: currant.App, database_dsn: str, spawn_worker: Any) -> None:
    worker = spawn_worker("--concurrency", "3", "--heartbeat", "0.2", "--dead-after", "5")
    wait_for(lambda: " started (pid " in worker.log(), message="the worker started")
    rows = json.loads(admin(database_dsn, app.schema, "workers", "--json").stdout)
    assert len(rows) == 1, rows
    (row,) = rows
    # The default queue first, then those the app's tasks declare.
    assert (row["pid"], row["queues"][:2], row["concurrency"]) == (worker.pid, ["default", "async"], 3), row
    assert row["hostname"] and row["last_seen"] and row["silent_for"] < 5, row
    table = admin(database_dsn, app.schema, "workers").stdout
    assert str(worker.pid) in table and "default,async" in table, table


def test_top_refreshes_until_interrupted(app: currant.App, database_dsn: str, spawn_worker: Any) -> None:
    app.enqueue_many("noop", [()] * 20)
    worker = spawn_worker()
    wait_for(lambda: " started (pid " in worker.log(), message="the worker started")
    top = subprocess.Popen(
        [sys.executable, "-m", "currant", "--dsn", database_dsn, "--schema", app.schema, "top"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert top.stdout is not None
    screens = 0
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while screens < 2 and time.monotonic() < deadline:
        line = top.stdout.readline()
        seen.append(line)
        screens += line.startswith("currant top")
    top.send_signal(signal.SIGINT)
    rest, errors = top.communicate(timeout=10)
    assert top.returncode == 0 and "Traceback" not in errors, errors
    text = "".join(seen)
    assert screens == 2, text
    assert "ready" in text and "out/s" in text and "default" in text, text
    assert "1 workers" in text and str(worker.pid) in text, text


def test_a_database_that_is_not_there_is_one_line_within_the_timeout(app: currant.App) -> None:
    started = time.monotonic()
    proc = admin("postgresql://postgres@127.0.0.1:1/x", "currant", "--connect-timeout", "2", "stats", timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "cannot connect to PostgreSQL at postgres@127.0.0.1:1/x" in proc.stderr
    assert time.monotonic() - started < 25  # a deadline guard, not a speed claim
    missing = admin(app.dsn, "no_such_schema", "stats")
    assert missing.returncode == 1 and "not installed in schema 'no_such_schema'" in missing.stderr, missing.stderr


def test_wrong_argument_types_fail_before_any_io() -> None:
    app = currant.App("postgresql://postgres@127.0.0.1:1/x", connect_timeout=1)  # any I/O would fail otherwise
    for call in (
        lambda: app.get_job("abc"),
        lambda: app.cancel("1"),
        lambda: app.retry(1.5),  # type: ignore[arg-type]
        lambda: app.get_job(True),
    ):  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="job id is an int"):
            call()
    with pytest.raises(ValueError, match="out of range"):
        app.get_job(0)
    with pytest.raises(currant.DatabaseUnavailable, match="127.0.0.1:1/x"):
        app.enqueue("noop")


def test_pause_resume_queues_and_limits(app: currant.App, database_dsn: str, spawn_worker: Any) -> None:
    schema = app.schema
    assert admin(database_dsn, schema, "pause", "mail").stdout.strip() == "mail: paused"
    assert admin(database_dsn, schema, "pause", "mail").stdout.strip() == "mail: was paused already"
    held = app.enqueue("limited.free", queue="mail")
    free = app.enqueue("limited.free")
    spawn_worker("--queues", "default,mail", "--poll-interval", "0.2", app="tests.apps.limited:app")
    wait_for(lambda: app.get_job(free).state == "succeeded", message="the default queue's job")  # type: ignore[union-attr]
    queues = {row["queue"]: row for row in json.loads(admin(database_dsn, schema, "--json", "queues").stdout)}
    assert queues["mail"]["paused"] is True and queues["mail"]["queued"] == 1
    assert queues["default"]["paused"] is False and queues["default"]["succeeded"] == 1
    assert app.get_job(held).state == "queued"  # type: ignore[union-attr]
    assert admin(database_dsn, schema, "resume", "mail").stdout.strip() == "mail: running"
    wait_for(lambda: app.get_job(held).state == "succeeded", message="the resumed queue's job")  # type: ignore[union-attr]
    assert admin(database_dsn, schema, "resume", "mail").stdout.strip() == "mail: was not paused"
    # The worker above runs tests.apps.limited: it declared its tasks' limits when it started.
    limits = {row["task"]: row for row in json.loads(admin(database_dsn, schema, "limits", "--json").stdout)}
    assert limits["limited.paced"]["per_second"] == 50 and limits["limited.slow"]["max_running"] == 3
    assert "limited.free" not in limits
    table = admin(database_dsn, schema, "limits").stdout
    assert "limited.per_customer" in table and "max_running" in table
