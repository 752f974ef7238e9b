"""The ``core`` and ``payload`` fixtures: every codec test runs on the compiled module and on the pure one."""

from __future__ import annotations

import importlib
import os
import types

import pytest

_COMPILED = ("currant._core", "currant._payload_c")


def _load(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        if name in _COMPILED and os.environ.get("CURRANT_IMPL") == "c":
            raise  # a wheel/CI run that promises the extension must not skip it
        pytest.skip(f"{name} is not built")


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("currant._core", id="c", marks=pytest.mark.c_extension),
        pytest.param("currant._core_py", id="python"),
    ],
)
def core(request: pytest.FixtureRequest) -> types.ModuleType:
    return _load(request.param)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("currant._payload_c", id="c", marks=pytest.mark.c_extension),
        pytest.param("currant.payload", id="python"),
    ],
)
def payload(request: pytest.FixtureRequest) -> types.ModuleType:
    """The msgpack rules: the pure module and its compiled build."""
    return _load(request.param)
