"""Currant demo: enqueue real jobs, run a worker on them, print what happened.

    python examples/demo.py            # against the embedded PostgreSQL (no set-up)
    CURRANT_DSN=postgresql://... python examples/demo.py

The app below is also what the worker imports (``demo:app``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import currant

app = currant.App(schema=os.environ.get("CURRANT_SCHEMA", "currant_demo"))


@app.task(name="demo.digest")
def digest(text: str, rounds: int) -> str:
    """A small real job: iterate SHA-256 over a text."""
    value = text.encode()
    for _ in range(rounds):
        value = hashlib.sha256(value).digest()
    return value.hex()[:16]


@app.task(name="demo.flaky", retry_backoff=0.1, max_attempts=3)
def flaky(n: int) -> int:
    """Fails on its first attempt, then succeeds: shows retries with backoff."""
    job = currant.current_job()
    if job is not None and job.attempt == 1:
        raise RuntimeError(f"flaky {n}: first attempt fails on purpose")
    return n * n


def main() -> None:
    jobs = int(os.environ.get("DEMO_JOBS", "20000"))
    print(f"currant {currant.__version__} (core: {currant.__impl__})")
    app.migrate()  # starts the embedded server on first use; not part of the timing below
    started = time.perf_counter()
    ids = digest.enqueue_many([(f"document-{i}", 10) for i in range(jobs)])
    enqueue_seconds = time.perf_counter() - started
    print(f"enqueued {len(ids):,} digest jobs in one COPY: {len(ids) / enqueue_seconds:,.0f} jobs/s")
    flaky_ids = [flaky.enqueue(n) for n in range(3)]
    print(f"enqueued {len(flaky_ids)} flaky jobs one at a time (ids {flaky_ids})")

    # The worker is a separate process, exactly as in production. Its working
    # directory is this folder so that "demo:app" imports this very module.
    # It serves until every job of this run has finished (the flaky ones wait
    # for their retry backoff on the database clock), then it is stopped the
    # way an operator stops one: SIGTERM.
    command = [sys.executable, "-m", "currant.worker", "demo:app", "--log-level", "WARNING"]
    print("running:", " ".join(command[1:]))
    env = {**os.environ, "CURRANT_DSN": app.dsn, "CURRANT_SCHEMA": app.schema}
    started = time.perf_counter()
    worker = subprocess.Popen(command, cwd=Path(__file__).parent, env=env)
    try:
        wait_until_finished(ids + flaky_ids, deadline=time.monotonic() + 300)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    print(f"worker done in {time.perf_counter() - started:.2f} s")

    first, last = app.get_job(ids[0]), app.get_job(ids[-1])
    assert first is not None and last is not None
    print(
        f"job {first.id}: {first.task}{('document-0', 10)} -> {first.result!r} ({first.state}, attempt {first.attempts})"
    )
    print(f"job {last.id}: state {last.state}, result {last.result!r}")
    for job_id in flaky_ids:
        job = app.get_job(job_id)
        assert job is not None
        errors = "; ".join(e["error"] for e in job.errors)
        print(
            f"job {job.id}: demo.flaky -> {job.result!r} after {job.attempts} attempts ({job.state}); errors: {errors}"
        )
    with app.connect(autocommit=True) as conn:
        counts = conn.execute(
            # jobs_all: live and archived jobs (python -m currant archive enable)
            f"SELECT state::text, count(*) FROM {app.schema}.jobs_all WHERE id BETWEEN %s AND %s GROUP BY 1 ORDER BY 1",
            (min(ids), max(flaky_ids)),
        ).fetchall()
    print("this run's jobs by state:", dict(counts))
    app.close()


def wait_until_finished(ids: list[int], deadline: float) -> None:
    last = max(ids)
    with app.connect(autocommit=True) as conn:
        while True:
            (unfinished,) = conn.execute(  # type: ignore[misc]
                f"SELECT count(*) FROM {app.schema}.jobs_all WHERE id BETWEEN %s AND %s"
                " AND state NOT IN ('succeeded', 'failed', 'cancelled')",
                (min(ids), last),
            ).fetchone()
            if unfinished == 0:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: {unfinished} jobs still unfinished after the deadline")
            time.sleep(0.1)


if __name__ == "__main__":
    main()
