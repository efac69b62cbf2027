"""The package imports follow the data: no module imports a layer above its own.

data -> models -> checkpoint -> run_model -> features -> training -> faces, explain -> evaluation ->
serving -> fit -> api -> cli,
with errors, config, devices and inference below everything. Imports inside functions count too:
a lazy import upward is still a cycle waiting for the first refactor.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "emorec"

LAYERS = [
    ("emorec", "emorec.errors", "emorec.config", "emorec.devices", "emorec.inference", "emorec.prediction_rows"),
    ("emorec.data",),
    ("emorec.models",),
    ("emorec.checkpoint", "emorec.zoo"),  # built-in model names resolve below everything that loads a run
    ("emorec.run_model",),
    ("emorec.features",),
    ("emorec.training",),
    ("emorec.faces", "emorec.explain"),  # detection, crops, Grad-CAM: evaluation uses them
    ("emorec.evaluation",),
    ("emorec.serving", "emorec.video"),  # photos and videos in, predictions out
    ("emorec.fit",),
    # building a built-in model runs train and fit; scoring it runs predict's code path
    ("emorec.api", "emorec.zoo.build", "emorec.zoo.scoring", "emorec.zoo.demo"),
    ("emorec.cli", "emorec.__main__"),
]



def layer(module: str) -> int:
    """Index of the most specific layer prefix that `module` falls under."""
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    assert best is not None, f"{module} is in no layer; add it to LAYERS"
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def emorec_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "emorec"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "emorec":
            # `from emorec import checkpoint` imports the module emorec.checkpoint.
            names = [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in names if (PACKAGE.parent / n.replace(".", "/")).with_suffix(".py").exists()} or {node.module}
    return found


def test_no_module_imports_a_layer_above_its_own():
    upward = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported in emorec_imports(path):
            if layer(imported) > layer(importer):
                upward.add((importer, imported))
    assert upward == set()


def test_evaluation_and_serving_no_longer_import_each_other():
    edges = {(module_name(p), i) for p in PACKAGE.rglob("*.py") for i in emorec_imports(p)}
    assert not {(a, b) for a, b in edges if a.startswith("emorec.evaluation") and b.startswith("emorec.serving")}
    assert not {(a, b) for a, b in edges if a.startswith("emorec.serving") and b.startswith("emorec.training")}
