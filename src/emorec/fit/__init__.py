"""emorec.fit: `fit(source, output, budget)` searches backbones, features and heads by validation
macro-F1 (probes by cross-validation) within a time budget (`emorec fit`); see `search.py`.

The names below are imported on first use, so `emorec --help` (which reads the grid's defaults
from `candidates.py`) does not import torch.
"""

__all__ = ["BackboneChoice", "FitResult", "fit"]


def __getattr__(name: str):
    if name in __all__:
        from emorec.fit import search

        return getattr(search, name)
    raise AttributeError(f"module 'emorec.fit' has no attribute {name!r}")
