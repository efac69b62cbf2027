"""The project's recipes (configs/*.yaml) and the rule that picks one for a dataset's images.

Small grayscale images are face crops in the FER-2013 style (48 px, mode L): configs/faces.yaml
trains them upsampled to 96 px instead of a photo recipe's 160-224 px. `emorec demo` and the full
fine-tunes of `emorec fit` both follow this rule.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIGS = REPO_ROOT / "configs"
DEMO_CONFIG = CONFIGS / "demo.yaml"
FACES_CONFIG = CONFIGS / "faces.yaml"
HIGH_ACCURACY_CONFIG = CONFIGS / "high_accuracy.yaml"
FACES_MAX_SIDE = 64
FACES_MIN_GREY = 0.8


def looks_like_face_crops(profile) -> bool:
    """Median shorter side <= FACES_MAX_SIDE px and >= FACES_MIN_GREY grayscale
    (`data.profile.ImageProfile`)."""
    return 0 < profile.median_short_side <= FACES_MAX_SIDE and profile.grey_fraction >= FACES_MIN_GREY
