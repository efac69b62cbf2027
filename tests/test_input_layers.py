"""faces/ and explain/ read inputs (`data.inputs`) and write rows (`prediction_rows`) through
modules below them, not through serving/, the layer above them: importing them loads no part of
serving, and no import of serving hides inside a function either."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "emorec"
BELOW_SERVING = ("faces", "explain")


def test_importing_every_faces_and_explain_module_loads_no_serving_module():
    script = (
        "import importlib, pkgutil, sys\n"
        f"for package in {BELOW_SERVING!r}:\n"
        "    root = importlib.import_module('emorec.' + package)\n"
        "    for info in pkgutil.iter_modules(root.__path__):\n"
        "        importlib.import_module(f'emorec.{package}.{info.name}')\n"
        "print(sorted(m for m in sys.modules if m.startswith('emorec.serving')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_function_in_faces_or_explain_imports_serving():
    found = []
    for package in BELOW_SERVING:
        for path in sorted((PACKAGE / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                found += [f"{package}/{path.relative_to(PACKAGE / package)}: {n}" for n in names if n.startswith("emorec.serving")]
    assert found == []
