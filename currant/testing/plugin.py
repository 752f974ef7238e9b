"""Currant's pytest plugin: ``currant_dsn`` and ``currant_app`` fixtures.

Registered through the ``pytest11`` entry point, so it loads wherever
Currant is installed; it only defines fixtures, so nothing happens (no
server, no connection) unless a test asks for one (the one autouse fixture
only empties a dict).

* ``currant_dsn`` (session): ``$CURRANT_TEST_DSN``, else the embedded
  PostgreSQL (started on first use, as ``currant.App()`` does).
* ``currant_app``: your App pointed at a fresh schema for this test, migrated,
  and the schema dropped afterwards. Say which App is yours with a fixture
  named ``currant_base_app`` returning it, or with the ``currant_app`` ini
  option (``module:attribute``); default: a bare ``currant.App()``.
* after every test: the clock moved by ``drain(advance_clock=...)`` on the
  drains' own connections is forgotten (it only moves forward within a test).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psycopg
import pytest

if TYPE_CHECKING:  # imported when a fixture is used: loading the plugin costs nothing
    from ..app import App


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("currant_app", "module:attribute of the currant.App the currant_app fixture points at a test schema")


@pytest.fixture(autouse=True)
def _currant_drain_clock() -> Iterator[None]:
    """The test clock that drains on their own connections move goes on from drain
    to drain within a test, and starts again at 0 for the next test (an App and a
    schema kept across tests, as a Django project's, would carry it otherwise)."""
    yield
    from . import _clocks

    _clocks.clear()


@pytest.fixture(scope="session")
def currant_dsn() -> str:
    """The PostgreSQL the tests use: $CURRANT_TEST_DSN, else the embedded server."""
    explicit = os.environ.get("CURRANT_TEST_DSN")
    if explicit:
        return explicit
    from ..embedded import embedded_dsn

    return embedded_dsn()


@pytest.fixture
def currant_base_app(request: pytest.FixtureRequest) -> App:
    """Your App, which ``currant_app`` points at a test schema: the ``currant_app`` ini
    option (``module:attribute``), else a bare ``currant.App()``. Override this
    fixture in your conftest.py to return it instead."""
    from ..app import App

    spec = request.config.getini("currant_app")
    if not spec:
        return App()
    from ..cli import load_app

    return load_app(str(spec))


@pytest.fixture
def currant_app(currant_base_app: App, currant_dsn: str) -> Iterator[App]:
    """The test's App on a schema of its own, migrated; dropped after the test."""
    from ..app import App

    app = currant_base_app
    if not isinstance(app, App):
        raise TypeError(f"currant_base_app must return a currant.App, not {type(app).__name__}")
    saved_dsn, saved_schema = app._dsn, app.schema
    schema = f"currant_test_{uuid.uuid4().hex[:12]}"
    app.configure(dsn=currant_dsn, schema=schema)
    try:
        # Inside the try: a migration that fails half-way still has its schema
        # dropped, and the App pointed back where it was.
        app.migrate()
        yield app
    finally:
        try:
            app.close()
            with psycopg.connect(currant_dsn, autocommit=True) as conn:
                conn.execute(app.sql["drop_test_schema"])
        finally:
            app._dsn = saved_dsn  # as it was: the next test (or none) configures it again
            app.configure(schema=saved_schema)
