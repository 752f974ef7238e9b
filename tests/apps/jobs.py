"""The app every worker subprocess of the tests runs (DSN and schema from the environment).

Tasks with side effects write to a ``ledger`` table on a connection of their
own, outside the job's transaction, so a duplicate execution leaves a visible
trace. The ledger write survives database restarts and terminated backends (it
reconnects and retries), so in the fault tests a fault shows up as a duplicate
entry, never as a failed job. ``$CURRANT_TEST_LEDGER_DSN``, when set, sends the
ledger writes to another address than the worker's own (a test that breaks
the worker's network path keeps the ledger out of it).

The ``time.sleep`` calls below are the tasks' own work (a slow handler, a
handler that polls its cancel flag), not synchronisation.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import psycopg

import currant

app = currant.App()
_local = threading.local()

# Names that must be stored and used verbatim (T41).
WEIRD_TASK = 'x\'); DROP TABLE jobs;-- "q" ; ünïcødé ✓'
WEIRD_QUEUE = "\"; NOTIFY x; -- 'q' ; ünï ✓"


def _ledger_conn() -> psycopg.Connection[Any]:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(
            os.environ.get("CURRANT_TEST_LEDGER_DSN") or app.dsn,
            autocommit=True,
            connect_timeout=5,
            application_name="currant-test-ledger",
        )
        _local.conn = conn
    return conn


def _ledger_execute(statement: str, params: tuple[Any, ...]) -> Any:
    deadline = time.monotonic() + 120
    while True:
        try:
            return _ledger_conn().execute(statement, params)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            conn = getattr(_local, "conn", None)
            if conn is not None:
                conn.close()
            time.sleep(0.1)  # a retry pause while the server is restarting, not synchronisation


def write_ledger(key: str) -> None:
    job = currant.current_job()
    _ledger_execute(
        f'INSERT INTO "{app.schema}".ledger (key, pid, attempt) VALUES (%s, %s, %s)',
        (key, os.getpid(), job.attempt if job else None),
    )


def _in_ledger(key: str) -> bool:
    return _ledger_execute(f'SELECT 1 FROM "{app.schema}".ledger WHERE key = %s', (key,)).fetchone() is not None


@app.task(name="noop")
def noop() -> None:
    pass


@app.task(name="report_progress")
def report_progress(total: int) -> None:
    """Three progress reports, then waits for the test's "go:<id>" ledger row
    (so the test reads the progress of a job that still runs)."""
    job = currant.current_job()
    assert job is not None
    for step in range(1, 4):
        job.progress(step, total, f"step {step}")
    while not _in_ledger(f"go:{job.id}"):
        time.sleep(0.05)  # polling the test's signal


@app.task(name="progress_until_go")
def progress_until_go(key: str) -> None:
    """Reports progress every 50 ms until the test writes ``<key>:go``."""
    job = currant.current_job()
    assert job is not None
    step = 0
    while not _in_ledger(key + ":go"):
        step += 1
        job.progress(step)
        time.sleep(0.05)  # the task's pace, polling the test's signal


@app.task(name="add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="echo")
def echo(*args: Any, **kwargs: Any) -> Any:
    return [list(args), kwargs]


@app.task(name="record", retry_backoff=0.05)
def record(key: str) -> None:
    write_ledger(key)


@app.task(name="record_slowly", retry_backoff=0.05)
def record_slowly(key: str, seconds: float) -> None:
    time.sleep(seconds)  # the task's work
    write_ledger(key)


@app.task(name="record_callback", retry_backoff=0.05)
def record_callback(key: str, **workflow: Any) -> None:
    """A group's callback: it also gets group_id and member_ids."""
    write_ledger(key)


@app.task(name="announce_slowly", retry_backoff=0.05)
def announce_slowly(key: str, seconds: float) -> None:
    """``record_slowly`` that also writes ``<key>:started`` when the handler begins."""
    write_ledger(key + ":started")
    time.sleep(seconds)  # the task's work
    write_ledger(key)


@app.task(name="arecord", queue="async")
async def arecord(key: str) -> str:
    await asyncio.sleep(0)
    await asyncio.to_thread(write_ledger, key)
    return key


@app.task(name="fail", retry_backoff=0.2, max_attempts=3)
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="fail_once", retry_backoff=0.05)
def fail_once(key: str) -> str:
    write_ledger(key)
    job = currant.current_job()
    if job is not None and job.attempt == 1:
        raise RuntimeError("first attempt fails")
    return "ok"


@app.task(name="ask_retry", max_attempts=5)
def ask_retry(delay: float) -> None:
    write_ledger("ask_retry")
    raise currant.Retry(delay=delay)


@app.task(name="discard")
def discard(reason: str) -> None:
    raise currant.Discard(reason)


@app.task(name="base_exception", max_attempts=1)
def base_exception(kind: str) -> None:
    if kind == "exit":
        raise SystemExit(3)
    raise KeyboardInterrupt


@app.task(name="sleep")
def sleep(seconds: float) -> None:
    time.sleep(seconds)  # the task's work


@app.task(name="cooperative", max_attempts=1)
def cooperative(key: str, until_released: bool = False) -> None:
    """Writes ``<key>:started``, then checks its cancel flag every 50 ms for 30 s.

    Cancelled: writes ``<key>:saw-cancel`` and raises JobCancelled. With
    ``until_released``, a ``<key>:release`` row in the ledger (written by the
    test) ends it normally, after one more look at the flag: it writes
    ``<key>:released`` and returns. Otherwise it writes ``<key>:finished`` at the end.
    """
    write_ledger(key + ":started")
    job = currant.current_job()
    assert job is not None
    for _ in range(600):
        if job.cancel_requested:
            write_ledger(key + ":saw-cancel")
            raise currant.JobCancelled()
        if until_released and _in_ledger(key + ":release"):
            if job.cancel_requested:  # the release was written after the flag's last look: look again
                write_ledger(key + ":saw-cancel")
                raise currant.JobCancelled()
            write_ledger(key + ":released")
            return
        time.sleep(0.05)  # the task polls its cancel flag
    write_ledger(key + ":finished")


@app.task(name="async_wait", queue="async", max_attempts=1)
async def async_wait(key: str) -> None:
    await asyncio.to_thread(write_ledger, key + ":started")
    await asyncio.sleep(60)


_peak_lock = threading.Lock()
_running = 0
_peak = 0


def _enter() -> None:
    global _running, _peak
    with _peak_lock:
        _running += 1
        _peak = max(_peak, _running)


def _leave() -> dict[str, int]:
    global _running
    with _peak_lock:
        _running -= 1
        return {"peak": _peak, "threads": threading.active_count()}


@app.task(name="async_peak", queue="async")
async def async_peak(seconds: float) -> dict[str, int]:
    """Sleeps; returns the most jobs (of either peak task) seen running at once, and the threads alive."""
    _enter()
    await asyncio.sleep(seconds)  # the task's work: waiting on I/O
    return _leave()


@app.task(name="sync_peak", queue="async")
def sync_peak(seconds: float) -> dict[str, int]:
    """``async_peak`` as a sync handler: the two share one count."""
    _enter()
    time.sleep(seconds)  # the task's work
    return _leave()


@app.task(name="hang", timeout=0.5, max_attempts=2, retry_backoff=0.05)
def hang(key: str) -> None:
    write_ledger(key)
    time.sleep(3)  # runs past its 0.5 s timeout


@app.task(name="async_hang", queue="async", timeout=0.5, max_attempts=2, retry_backoff=0.05)
async def async_hang(key: str) -> None:
    await asyncio.to_thread(write_ledger, key)
    await asyncio.sleep(30)


@app.task(name="kill_worker")
def kill_worker(key: str) -> None:
    write_ledger(key)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="bad_result")
def bad_result() -> object:
    return object()


if os.environ.get("CURRANT_TEST_CRON"):

    @app.periodic(os.environ["CURRANT_TEST_CRON"], name="tick")
    def tick() -> None:
        write_ledger("tick")


@app.task(name="nul_error", max_attempts=1)
def nul_error() -> None:
    raise ValueError("bad\x00byte")


def _broken_backoff(attempt: int) -> float:
    raise ZeroDivisionError("backoff policy bug")


@app.task(name="bad_backoff", retry_backoff=_broken_backoff)
def bad_backoff() -> None:
    raise RuntimeError("fails, and its backoff policy fails too")


@app.task(name="retry_forever_later", max_attempts=3)
def retry_forever_later(delay: float) -> None:
    raise currant.Retry(delay=delay)


@app.task(name="surrogate_error", max_attempts=1)
def surrogate_error() -> None:
    raise ValueError("bad \udcff file name")


@app.task(name=WEIRD_TASK, queue=WEIRD_QUEUE)
def weird(key: str) -> str:
    write_ledger(key)
    return key
