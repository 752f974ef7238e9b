"""Which core is loaded: the compiled one by default, the twin only on request or when missing."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import currant

PACKAGE = Path(currant.__file__).parent


def _probe(
    env_impl: str | None, root: Path = PACKAGE.parent, warnings: str = "error"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CURRANT_IMPL"}
    if env_impl is not None:
        env["CURRANT_IMPL"] = env_impl
    env["PYTHONPATH"] = str(root)
    code = (
        # An editable install's finder maps currant's modules to the checkout; leave only PYTHONPATH's.
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
        "import currant, currant._impl as i; print(currant.__impl__, i.core.__name__, i.payload.__name__)"
    )
    return subprocess.run(
        [sys.executable, "-W", f"{warnings}::RuntimeWarning", "-c", code],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(os.environ.get("CURRANT_IMPL") == "python", reason="suite runs on the twin")
def test_compiled_core_is_the_default() -> None:
    proc = _probe(None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["c", "currant._core", "currant._payload_c"]


def test_twin_on_request() -> None:
    proc = _probe("python")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["python", "currant._core_py", "currant.payload"]


def test_a_package_built_without_extensions_falls_back_with_a_warning(tmp_path: Path) -> None:
    """What CURRANT_NO_EXTENSIONS=1 or a platform without a wheel installs: no compiled modules."""
    shutil.copytree(PACKAGE, tmp_path / "currant", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    proc = _probe(None, root=tmp_path, warnings="default")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["python", "currant._core_py", "currant.payload"]
    assert "compiled core" in proc.stderr and "RuntimeWarning" in proc.stderr
    demanded = _probe("c", root=tmp_path)
    assert demanded.returncode != 0 and "ModuleNotFoundError" in demanded.stderr


def test_unknown_impl_is_refused() -> None:
    proc = _probe("rust")
    assert proc.returncode != 0
    assert "CURRANT_IMPL='rust' is not one of 'c', 'python'" in proc.stderr


def test_stub_and_twin_export_the_same_names() -> None:
    from currant import _core_py

    tree = ast.parse((PACKAGE / "_core.pyi").read_text())
    stubbed = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            stubbed.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stubbed.add(node.target.id)
        elif isinstance(node, ast.Assign):
            stubbed.update(t.id for t in node.targets if isinstance(t, ast.Name))
    public = {name for name in stubbed if not name.startswith("_")}
    assert public, "the stub declares nothing"
    missing = [name for name in public if not hasattr(_core_py, name)]
    assert not missing
