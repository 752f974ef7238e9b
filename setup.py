"""Build the optional compiled modules.

``currant._core`` is the Cython core; ``currant._payload_c`` is
``currant/payload.py`` compiled as is (the msgpack rules run once per claimed
job, and compiled they cost about two thirds as much). ``CURRANT_NO_EXTENSIONS=1``
(or a non-CPython interpreter) builds a pure-Python package; the pure modules
then serve every call.
"""

import os
import platform

from setuptools import Extension, setup

ext_modules = []
if not os.environ.get("CURRANT_NO_EXTENSIONS") and platform.python_implementation() == "CPython":
    from Cython.Build import cythonize

    directives = {"language_level": "3", "boundscheck": False, "wraparound": False, "cdivision": True}
    annotate = bool(os.environ.get("CURRANT_DEBUG"))
    ext_modules = cythonize(
        [Extension("currant._core", ["currant/_core.pyx"])],
        compiler_directives=directives,
        annotate=annotate,
    ) + cythonize(
        [Extension("currant._payload_c", ["currant/payload.py"])],
        # Plain Python semantics: the annotations are for mypy, not C types.
        compiler_directives={**directives, "annotation_typing": False, "wraparound": True},
        annotate=annotate,
    )

setup(ext_modules=ext_modules)
