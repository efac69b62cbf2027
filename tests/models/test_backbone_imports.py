"""The backbone modules import in one direction: backbone -> backbone_group -> timm_backbone.

A circle hidden by imports inside functions still works until someone moves one of them to the
top; these tests catch it before that happens."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "src" / "emorec" / "models"
BACKBONE_MODULES = ("emorec.models.backbone", "emorec.models.backbone_group", "emorec.models.timm_backbone")


@pytest.mark.parametrize("module", BACKBONE_MODULES)
def test_each_backbone_module_imports_first_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _imports_within_models(path: Path) -> set[str]:
    """Every emorec.models module `path` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n.split(".")[2] for n in names if n.startswith("emorec.models.") and n.count(".") >= 2
                and (MODELS / f"{n.split('.')[2]}.py").is_file()}
    return out


def test_no_module_of_emorec_models_imports_itself_through_others():
    graph = {p.stem: _imports_within_models(p) - {p.stem} for p in MODELS.glob("*.py") if p.stem != "__init__"}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    circles = sorted(m for m in graph if reaches(m, m, {m}))
    assert not circles, f"import circles through {circles}: {graph}"
    assert graph["timm_backbone"] == set() and "backbone" not in graph["backbone_group"]
