import sys
from pathlib import Path

# The run factory (evaluation tests) and the shipped photos (face tests), reused rather than copied.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faces"))
from run_factory import one_torch_thread  # noqa: E402,F401 (autouse fixture)
