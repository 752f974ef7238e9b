"""The one place that picks the core implementation.

``CURRANT_IMPL=c`` demands the compiled core (ImportError if it is missing),
``CURRANT_IMPL=python`` demands the pure-Python twin, unset means the compiled
core when it was built, else the twin with a warning. The result is published
as ``currant.__impl__``.
"""

from __future__ import annotations

import os
import types
import warnings

_requested = os.environ.get("CURRANT_IMPL", "").strip().lower()

core: types.ModuleType
if _requested == "python":
    from . import _core_py as core

    __impl__ = "python"
elif _requested == "c":
    from . import _core as core

    __impl__ = "c"
elif _requested:
    raise ImportError(f"CURRANT_IMPL={_requested!r} is not one of 'c', 'python'")
else:
    try:
        from . import _core as core  # noqa: F401 - published as currant._impl.core

        __impl__ = "c"
    except ImportError:

        __impl__ = "python"
        warnings.warn(
            "currant: the compiled core (currant._core) is not built; using the"
            " pure-Python twin, which is several times slower",
            RuntimeWarning,
            stacklevel=2,
        )
