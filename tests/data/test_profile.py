"""`profile_images`: a sample's size and greyness, which `emorec demo` picks its recipe by."""

from __future__ import annotations

import numpy as np
from PIL import Image

from emorec.data.profile import is_grey, profile_images


def _save(path, pixels, mode=None):
    Image.fromarray(pixels, mode).save(path, quality=90)
    return path


def test_grey_modes_and_grey_pixels_stored_as_rgb_count_as_grey(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    colour = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    with Image.open(_save(tmp_path / "l.jpg", grey)) as image:
        assert image.mode == "L" and is_grey(image)
    with Image.open(_save(tmp_path / "rgb_grey.jpg", np.repeat(grey[..., None], 3, axis=2))) as image:
        assert image.mode == "RGB" and is_grey(image)  # JPEG chroma rounding stays within the tolerance
    with Image.open(_save(tmp_path / "colour.jpg", colour)) as image:
        assert not is_grey(image)


def test_profile_reports_the_median_shorter_side_and_the_grey_share(tmp_path):
    rng = np.random.default_rng(1)
    paths = [_save(tmp_path / f"g{i}.png", rng.integers(0, 256, (48, 60), dtype=np.uint8)) for i in range(3)]
    paths.append(_save(tmp_path / "c.png", rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    profile = profile_images([*paths, tmp_path / "broken.jpg"])
    assert profile.sampled == 4 and profile.median_short_side == 48 and profile.grey_fraction == 0.75
    assert "48 px" in profile.describe()


def test_a_large_dataset_is_sampled_evenly(tmp_path):
    pixels = np.zeros((20, 20), dtype=np.uint8)
    paths = [_save(tmp_path / f"{i:03d}.png", pixels) for i in range(100)]
    assert profile_images(paths, sample=10).sampled == 10
    assert profile_images([]).sampled == 0
