"""examples/fastapi_app.py through FastAPI's TestClient, against the real database:
enqueue from an endpoint, a transactional enqueue that commits or rolls back
with the endpoint's row, and the status endpoint."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import psycopg
import pytest

from currant.testing import drain
from tests.conftest import ROOT

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient


@pytest.fixture
def example(database_dsn: str, schema_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("CURRANT_DSN", database_dsn)
    monkeypatch.setenv("CURRANT_SCHEMA", schema_name)
    spec = importlib.util.spec_from_file_location("fastapi_app", ROOT / "examples" / "fastapi_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastapi_app"] = module
    spec.loader.exec_module(module)
    yield module
    module.queue.close()
    sys.modules.pop("fastapi_app", None)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS signups")


def _signups(database_dsn: str) -> list[str]:
    with psycopg.connect(database_dsn) as conn:
        return [email for (email,) in conn.execute("SELECT email FROM signups ORDER BY 1")]


def test_endpoints_enqueue_and_report(example: Any, database_dsn: str) -> None:
    with TestClient(example.api) as client:
        added = client.post("/add", params={"a": 2, "b": 3}).json()["job_id"]
        assert client.get(f"/jobs/{added}").json()["state"] == "queued"
        welcome = client.post("/signup", params={"email": "ada@example.com"}).json()["job_id"]
        refused = client.post("/signup", params={"email": "nobody"})
        assert refused.status_code == 422
        assert _signups(database_dsn) == ["ada@example.com"]  # the refused row was rolled back...
        report = drain(example.queue)
        assert report.succeeded == [added, welcome]  # ...and its job with it
        assert client.get(f"/jobs/{added}").json() == {
            "id": added,
            "task": "fastapi_app.add",
            "state": "succeeded",
            "result": 5,
            "error": None,
        }
        assert client.get(f"/jobs/{welcome}").json()["result"] == "welcomed ada@example.com"
        assert client.get("/jobs/999999").status_code == 404
