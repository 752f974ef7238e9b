"""Small helpers shared by the fault tests."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

import currant
from tests.conftest import wait_for

# Short lease timings (production defaults: 5 s / 30 s / 1 s).
FAST = ("--heartbeat", "0.2", "--dead-after", "1.0", "--poll-interval", "0.2")


def counts(conn: Any, schema: str) -> dict[str, int]:
    rows = conn.execute(f'SELECT state::text, count(*) FROM "{schema}".jobs GROUP BY 1').fetchall()
    return {state: count for state, count in rows}


def wait_all_succeeded(conn: Any, schema: str, total: int, timeout: float = 90.0) -> None:
    def done() -> bool:
        return counts(conn, schema).get("succeeded", 0) >= total

    try:
        wait_for(done, timeout=timeout, interval=0.1, message=f"{total} jobs succeeded")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; states now: {counts(conn, schema)}") from None


def worker_id_of(conn: Any, schema: str, pid: int, timeout: float = 30.0) -> int:
    def lookup() -> int | None:
        row = conn.execute(f'SELECT max(id) FROM "{schema}".workers WHERE pid = %s', (pid,)).fetchone()
        return row[0] if row and row[0] is not None else None

    return int(wait_for(lookup, timeout=timeout, message=f"worker pid {pid} registered"))


def running_of(conn: Any, schema: str, worker_ids: list[int]) -> set[int]:
    rows = conn.execute(
        f"SELECT id FROM \"{schema}\".jobs WHERE state = 'running' AND worker_id = ANY(%s)", (worker_ids,)
    ).fetchall()
    return {row[0] for row in rows}


def ledger_rows(conn: Any, schema: str) -> list[tuple[str, int, int | None]]:
    return conn.execute(f'SELECT key, pid, attempt FROM "{schema}".ledger ORDER BY at').fetchall()


def ledger_count(conn: Any, schema: str) -> int:
    return int(conn.execute(f'SELECT count(*) FROM "{schema}".ledger').fetchone()[0])


def retrying(action: Any, attempts: int = 200, pause: float = 0.1) -> Any:
    """Run a read through database restarts."""
    for attempt in range(attempts):
        try:
            return action()
        except psycopg.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(pause)  # a retry pause while the server restarts
    return None


class Producer(threading.Thread):
    """Enqueues ``record`` jobs with unique keys, retrying each key until acknowledged."""

    def __init__(self, app: currant.App, pause: float = 0.004) -> None:
        super().__init__(daemon=True, name="producer")
        self.app = app
        self.pause = pause
        self.stop = threading.Event()
        self.acked: set[str] = set()
        self.attempted: set[str] = set()
        self.unknown: set[str] = set()
        self.errors: dict[str, int] = {}

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"p{i}"
            i += 1
            self.attempted.add(key)
            while True:
                try:
                    self.app.enqueue("record", (key,), unique_key=key)
                except currant.EnqueueOutcomeUnknown:
                    self.unknown.add(key)
                except (psycopg.Error, currant.DatabaseUnavailable) as exc:
                    name = type(exc).__name__
                    self.errors[name] = self.errors.get(name, 0) + 1
                else:
                    self.acked.add(key)
                    break
                time.sleep(0.05)  # a retry pause while the server is away
            time.sleep(self.pause)  # the producer's pace
