"""``python -m currant dashboard`` as a user runs it: a real process on a loopback port."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import currant
from tests.conftest import ROOT, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "currant", *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURRANT_DASHBOARD_")}
    env.update(extra)
    return env


def _get(url: str, **kwargs: Any) -> int | None:
    try:
        return httpx.get(url, timeout=5, **kwargs).status_code
    except httpx.TransportError:
        return None


def test_serves_with_basic_auth_and_logs_no_secret(app: currant.App, database_dsn: str, tmp_path: Path) -> None:
    # The test server trusts local connections, so a password in the DSN is accepted and ignored.
    params = conninfo_to_dict(database_dsn)
    params["password"] = "dsn-secret-1"
    dsn = make_conninfo(**params)
    port = _free_port()
    log = tmp_path / "dashboard.log"
    env = _env(CURRANT_DSN=dsn, CURRANT_DASHBOARD_USER="ops", CURRANT_DASHBOARD_PASSWORD="auth-secret-2")
    process = _run(["--schema", app.schema, "dashboard", "--port", str(port)], env, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(url + "/health") is not None or process.poll() is not None, message="the server")
        assert process.poll() is None, log.read_text()
        assert _get(url + "/health") == 401
        auth = "Basic " + base64.b64encode(b"ops:auth-secret-2").decode()
        assert _get(url + "/health", headers={"Authorization": auth}) == 200
        assert _get(url + "/jobs", headers={"Authorization": auth}) == 200
    finally:
        process.terminate()
        process.wait(30)
    text = log.read_text()
    assert f"currant dashboard on http://127.0.0.1:{port}/" in text and "basic auth on" in text
    assert "dsn-secret-1" not in text and "auth-secret-2" not in text
    assert all("secret" not in arg for arg in process.args)  # type: ignore[union-attr]


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_refuses_a_non_loopback_address_without_auth(
    app: currant.App, database_dsn: str, tmp_path: Path, host: str
) -> None:
    log = tmp_path / "dashboard.log"
    process = _run(
        ["--schema", app.schema, "dashboard", "--host", host, "--port", str(_free_port())],
        _env(CURRANT_DSN=database_dsn),
        log,
    )
    assert process.wait(60) == 1
    assert "CURRANT_DASHBOARD_USER" in log.read_text() and "--insecure" in log.read_text()


def test_refuses_a_schema_without_the_dashboard_tables(database_dsn: str, tmp_path: Path) -> None:
    log = tmp_path / "dashboard.log"
    process = _run(
        ["--schema", "nothing_here", "dashboard", "--port", str(_free_port())], _env(CURRANT_DSN=database_dsn), log
    )
    assert process.wait(60) == 1
    assert "python -m currant migrate" in log.read_text()
