"""examples/quickstart.ipynb runs top to bottom, headless, and shows its pictures inline."""

from __future__ import annotations

import os
from pathlib import Path

import ipykernel  # noqa: F401  (provides the `python3` kernelspec for the running interpreter)
import nbclient
import nbformat
import pytest

import emorec

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # Like papermill: a cell after the one tagged `parameters` points the outputs at tmp_path.
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(f"WORK = Path({str(tmp_path)!r})"))
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    # One OpenMP thread in the kernel: under `pytest -n 2` on two cores more threads oversubscribe
    # the CPU and a tiny epoch goes from ~1 s to ~30 s (measured on the development machine).
    # The kernel imports the emorec this session imported: a relative PYTHONPATH=src would not
    # resolve from the kernel's working folder, and the editable install may be another checkout.
    package_root = str(Path(emorec.__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    client.execute(env=env)

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 5
    text = "".join(o.get("text", "") for o in outputs)
    assert "single view" in text and "ONNX and PyTorch agree" in text
    assert (tmp_path / "runs" / "quickstart" / "eval" / "test" / "report.md").is_file()
