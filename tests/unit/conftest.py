"""The ``core`` fixture: every codec test runs on the compiled core and on the twin."""

from __future__ import annotations

import importlib
import os
import types

import pytest


def _load(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        if name == "currant._core" and os.environ.get("CURRANT_IMPL") == "c":
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
