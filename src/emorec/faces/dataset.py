"""Labelled photos -> the crop of each photo's largest face, for `evaluate --faces`.

A drop-in for `data.dataset.ManifestDataset(return_index=True)`: `(tensor, label index, index)` per
photo (for `collate_indexed`), or None for a
photo that cannot be read or shows no face (the evaluation counts those as skipped). The label
of a photo is taken to be that of its largest face, its subject.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset

from emorec.data.inputs import Failure, load_or_failure
from emorec.faces.crop import crop_largest_face
from emorec.faces.detect import create_detector

log = logging.getLogger("emorec.faces")


class FaceCropDataset(Dataset):
    """Like ManifestDataset, but the transform sees the largest face's aligned crop.

    The detector runs on the CPU: it also runs inside DataLoader workers, where CUDA does not
    survive the fork.
    """

    def __init__(self, samples: Sequence, label_map, transform, detector: str = "mtcnn", margin: float = 0.2):
        self.paths = np.array([s.path for s in samples])
        self.targets = np.array(label_map.encode([s.label for s in samples]), dtype=np.int64)
        self.transform = transform
        self.detector = create_detector(detector, "cpu")
        self.margin = margin

    def __len__(self) -> int:
        return len(self.paths)

    def crop_photo(self, path: str):
        """The largest face's crop of the photo at `path` (PIL), or None when unreadable or faceless."""
        image = load_or_failure(path)
        if isinstance(image, Failure):
            log.warning("skipping unreadable image %s: %s", image.path, image.reason)
            return None
        face = crop_largest_face(image, self.detector, self.margin)
        if face is None:
            log.warning("skipping %s: no face found", path)
        return face

    def __getitem__(self, index: int):
        face = self.crop_photo(str(self.paths[index]))
        if face is None:
            return None
        return self.transform(face), int(self.targets[index]), index
