"""Feature extraction decodes images the way evaluation does."""

from __future__ import annotations

import emorec.data.imageio as imageio
from emorec.data.transforms import eval_resize_size
from emorec.features.extract import extract_features


def test_jpegs_are_decoded_at_the_eval_resize_size_not_the_crop_size(tiny_dataset, tmp_path, monkeypatch):
    # A draft decode to the crop size (32) leaves a 280 px JPEG at 35 px, which the eval
    # transform's Resize(36) would then upsample; the floor must be the resize size.
    asked = []
    real_load_rgb = imageio.load_rgb

    def spy(path, min_size=None):
        asked.append(min_size)
        return real_load_rgb(path, min_size)

    monkeypatch.setattr(imageio, "load_rgb", spy)
    extract_features(tiny_dataset, "test_efficientnet", pretrained=False, image_size=32, augmented_views=1,
                     grid=0, cache_dir=tmp_path / "cache", num_workers=0, progress=False, log=lambda _: None)
    assert len(asked) == 48 and set(asked) == {eval_resize_size(32)} == {36}
