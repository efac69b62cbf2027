"""Run an exported .onnx model with onnxruntime: numpy in, numpy out, no torch import.

The preprocessing and label names travel inside the ONNX file (metadata_props key
`METADATA_KEY`, JSON), so the .onnx file alone is enough to serve; `export` also writes the same
JSON beside it for people to read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emorec.data.preprocess import Preprocessing
from emorec.errors import EmorecError

METADATA_KEY = "emorec"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class OnnxClassifier:
    """An exported emorec model: `logits(batch)` for (B, 3, H, W) float32 arrays."""

    def __init__(self, path: str | Path, threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise EmorecError(f"ONNX model not found: {self.path}; export one with `emorec export RUN_DIR --format onnx`")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for corrupt files
            raise EmorecError(f"cannot load ONNX model {self.path} ({str(e).splitlines()[0]}); re-export it")
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise EmorecError(f"{self.path} has no '{METADATA_KEY}' metadata (labels, preprocessing); export it with `emorec export`")
        self.metadata = json.loads(meta)
        self.labels: list[str] = list(self.metadata["labels"])
        self.preprocessing = Preprocessing.from_dict(self.metadata["preprocessing"])
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
