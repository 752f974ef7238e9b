"""Fixtures of the dashboard tests: a real dashboard served by uvicorn on a
loopback port (in a thread of the test process), over the test's own schema,
and a world with a job in every state.

The dashboard gets an App of its own (same database and schema as the test's
``app``): its async pool lives on the server's event loop.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

pytest.importorskip("starlette")
import uvicorn

import currant
from currant import codec
from currant.dashboard import asgi_app
from tests.conftest import wait_for

CSRF_INPUT = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@dataclass
class Served:
    url: str
    app: currant.App  # the dashboard's own App
    starlette: Any
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    @property
    def dashboard(self) -> Any:
        return self.starlette.state.dashboard


def serve(application: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(application, log_level="warning", access_log=False, lifespan="auto")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, message="the dashboard server to start")
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def start_dashboard(database_dsn: str, schema_name: str, app: currant.App) -> Iterator[Any]:
    """Start a dashboard: ``start_dashboard(read_only=False, credentials=None)``; stopped at teardown."""
    started: list[Served] = []

    def start(*, read_only: bool = False, credentials: tuple[str, str] | None = None) -> Served:
        own = currant.App(database_dsn, schema=schema_name)
        application = asgi_app(own, read_only=read_only, credentials=credentials, use_env=False)
        server, thread, url = serve(application)
        served = Served(url, own, application, server, thread)
        started.append(served)
        return served

    yield start
    for served in started:
        served.server.should_exit = True
        served.thread.join(30)
        served.app.close()


@pytest.fixture
def dashboard(start_dashboard: Any) -> Served:
    served: Served = start_dashboard()
    return served


def csrf_token(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


@pytest.fixture
def world(app: currant.App, db: psycopg.Connection[Any]) -> dict[str, int]:
    """One job in every state, by state, made as Currant makes them: the
    producer API for queued, scheduled and cancelled; the worker's writes
    (state, attempts, lease, result, errors) for the rest, with a registered
    worker holding the running one."""
    schema = f'"{app.schema}"'
    ids = {
        "queued": app.enqueue("echo", ("ready", 1), {"flag": True}, queue="mail"),
        "scheduled": app.enqueue("echo", ("later",), delay=3600),
        "cancelled": app.enqueue("echo", ("never",)),
        "succeeded": app.enqueue("add", (2, 3)),
        "failed": app.enqueue("fail", ("boom",), queue="mail"),
        "retrying": app.enqueue("fail", ("again",)),
        "running": app.enqueue("sleep", (30,)),
    }
    ids["waiting"] = app.enqueue("echo", ("after",), depends_on=[ids["running"]])
    assert app.cancel(ids["cancelled"]) == "cancelled"
    worker = db.execute(
        app.sql["register_worker"],
        {"hostname": "test-host", "pid": 4242, "queues": ["default", "mail"], "concurrency": 4},
    ).fetchone()[0]
    db.execute(f"UPDATE {schema}.workers SET running = 1 WHERE id = %s", (worker,))
    db.execute(
        f"UPDATE {schema}.jobs SET state = 'succeeded', attempts = 1, started_at = now(), finished_at = now(),"
        " worker_id = %s, result = %s WHERE id = %s",
        (worker, codec.pack_value(5), ids["succeeded"]),
    )
    for state, attempts, message in (("failed", 3, "ValueError: boom"), ("retrying", 1, "ValueError: again")):
        errors = [
            {
                "attempt": n,
                "at": "2026-01-01T00:00:00+00:00",
                "error": message,
                "traceback": f'Traceback (most recent call last):\n  File "tests/apps/jobs.py", line {n}\n{message}',
            }
            for n in range(1, attempts + 1)
        ]
        db.execute(
            f"UPDATE {schema}.jobs SET state = %s, attempts = %s, errors = %s::jsonb, worker_id = %s,"
            " started_at = now(), finished_at = CASE WHEN %s = 'failed' THEN now() END,"
            " run_at = CASE WHEN %s = 'retrying' THEN now() + interval '1 hour' ELSE run_at END WHERE id = %s",
            (state, attempts, psycopg.types.json.Jsonb(errors), worker, state, state, ids[state]),
        )
    db.execute(
        f"UPDATE {schema}.jobs SET state = 'running', attempts = 1, started_at = now(), worker_id = %s WHERE id = %s",
        (worker, ids["running"]),
    )
    ids["worker"] = worker
    return ids
