"""Live updates: NOTIFY and the pulse reach open pages as server-sent events,
through one LISTEN connection per dashboard, debounced."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from typing import Any

import psycopg

import currant
from tests.conftest import wait_for
from tests.dashboard.conftest import Served


class EventStream:
    """A client of ``/events`` on a plain socket, read on a thread of its own
    (a socket can be closed from the test at once, whatever the reader does)."""

    def __init__(self, url: str) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        host, port = url.removeprefix("http://").split(":")
        self._sock = socket.create_connection((host, int(port)), timeout=10)
        self._sock.sendall(f"GET /events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                self.lines.put(line.rstrip(b"\r").decode())

    def drain(self) -> list[str]:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return self.seen

    def changes(self) -> list[dict[str, Any]]:
        lines = self.drain()
        return [
            json.loads(lines[i + 1][len("data: ") :]) for i, line in enumerate(lines[:-1]) if line == "event: change"
        ]

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(10)


def _connected(stream: EventStream) -> bool:
    return ": connected" in stream.drain()


def _dashboard_sessions(db: psycopg.Connection[Any]) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'currant-dashboard'"
        " AND datname = current_database()"
    ).fetchone()
    return int(row[0])


def test_an_enqueue_reaches_an_open_page_as_an_event(app: currant.App, dashboard: Served) -> None:
    stream = EventStream(dashboard.url)
    try:
        wait_for(lambda: _connected(stream), message="the stream to open")
        wait_for(dashboard.dashboard.hub.listening.is_set, message="the hub to LISTEN")
        app.enqueue("echo", (), queue="watched")
        wait_for(
            lambda: any("watched" in change["queues"] for change in stream.changes()),
            message="a change event naming the queue",
        )
    finally:
        stream.close()


def test_finished_jobs_reach_open_pages_without_a_notification(
    app: currant.App, dashboard: Served, db: psycopg.Connection[Any]
) -> None:
    """Completions send no NOTIFY: what workers report each heartbeat (activity) is the pulse's to see."""
    stream = EventStream(dashboard.url)
    try:
        wait_for(lambda: _connected(stream), message="the stream to open")
        wait_for(dashboard.dashboard.hub.listening.is_set, message="the hub to LISTEN")
        wait_for(lambda: dashboard.dashboard.hub._pulse is not None, message="the first pulse")
        before = len(stream.changes())
        db.execute(
            f"INSERT INTO \"{app.schema}\".activity VALUES (date_trunc('minute', now()), 'q', 't', 'succeeded', 10)"
        )
        wait_for(lambda: len(stream.changes()) > before, message="a change event after the activity report")
    finally:
        stream.close()


def test_many_pages_share_one_listen_connection_which_closes_when_nobody_watches(
    dashboard: Served, db: psycopg.Connection[Any]
) -> None:
    dashboard.dashboard.hub.linger = 0.2
    streams = [EventStream(dashboard.url) for _ in range(3)]
    try:
        for stream in streams:
            wait_for(lambda stream=stream: _connected(stream), message="the stream to open")
        wait_for(dashboard.dashboard.hub.listening.is_set, message="the hub to LISTEN")
        assert dashboard.dashboard.hub.clients == 3
        assert _dashboard_sessions(db) == 1
    finally:
        for stream in streams:
            stream.close()
    wait_for(lambda: _dashboard_sessions(db) == 0, message="the LISTEN connection to close after the last client")


def test_notifications_are_sent_at_most_once_per_debounce_interval(app: currant.App, dashboard: Served) -> None:
    """45 enqueues, each its own commit and so its own notification, arriving over some time: however
    fast they come, the pages hear of them at most once per debounce interval (and every queue is named)."""
    hub = dashboard.dashboard.hub
    stream = EventStream(dashboard.url)
    queues = [f"burst{n:02d}" for n in range(45)]  # an event names at most 50 queues
    try:
        wait_for(lambda: _connected(stream), message="the stream to open")
        wait_for(hub.listening.is_set, message="the hub to LISTEN")
        started = time.monotonic()
        for name in queues:
            app.enqueue("echo", (), queue=name)
        wait_for(
            lambda: set(queues) <= {q for change in stream.changes() for q in change["queues"]},
            message="every queue named by some event",
        )
        elapsed = time.monotonic() - started
        carrying = [change for change in stream.changes() if set(change["queues"]) & set(queues)]
        # The first goes out at once; each later one waits out the interval since the one before.
        assert len(carrying) <= 1 + elapsed / hub.debounce, (len(carrying), elapsed)
        assert len(carrying) < len(queues)
    finally:
        stream.close()
