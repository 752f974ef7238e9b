"""The one place that picks the compiled or the pure-Python implementation.

Two modules have a compiled form: the core (``currant._core``, written in
Cython, twin ``currant._core_py``) and the msgpack rules (``currant.payload``,
one Python source, also compiled as ``currant._payload_c`` by the same build).

``CURRANT_IMPL=c`` demands both compiled modules (ImportError if one is
missing), ``CURRANT_IMPL=python`` demands the pure ones, unset means the
compiled ones when they were built, else the pure ones with a warning. The
result is published as ``currant.__impl__``.
"""

from __future__ import annotations

import importlib
import os
import types
import warnings

_requested = os.environ.get("CURRANT_IMPL", "").strip().lower()
if _requested not in ("", "c", "python"):
    raise ImportError(f"CURRANT_IMPL={_requested!r} is not one of 'c', 'python'")


def _load(compiled: str, pure: str) -> tuple[types.ModuleType, bool]:
    """The module and whether it is the compiled one."""
    if _requested == "python":
        return importlib.import_module(pure), False
    try:
        return importlib.import_module(compiled), True
    except ImportError:
        if _requested == "c":
            raise
        return importlib.import_module(pure), False


core, _core_compiled = _load("currant._core", "currant._core_py")
payload, _payload_compiled = _load("currant._payload_c", "currant.payload")
__impl__ = "c" if _core_compiled and _payload_compiled else "python"
if __impl__ == "python" and not _requested:
    warnings.warn(
        "currant: the compiled core (currant._core, currant._payload_c) is not built; using the"
        " pure-Python twin, which is several times slower",
        RuntimeWarning,
        stacklevel=2,
    )
