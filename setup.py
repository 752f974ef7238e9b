"""Build the optional Cython core.

``CURRANT_NO_EXTENSIONS=1`` (or a non-CPython interpreter) builds a pure-Python
package; the pure twin ``currant._core_py`` then serves every call.
"""

import os
import platform

from setuptools import Extension, setup

ext_modules = []
if not os.environ.get("CURRANT_NO_EXTENSIONS") and platform.python_implementation() == "CPython":
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [Extension("currant._core", ["currant/_core.pyx"])],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
        },
        annotate=bool(os.environ.get("CURRANT_DEBUG")),
    )

setup(ext_modules=ext_modules)
