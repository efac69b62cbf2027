"""Feature extraction decodes images the way evaluation does, and skips and counts the ones it
cannot read."""

from __future__ import annotations

import emorec.data.imageio as imageio
from emorec.data.manifest import Manifest, Sample
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


def test_a_corrupt_and_a_missing_image_are_skipped_and_counted_through_load_or_failure(tiny_dataset, tmp_path,
                                                                                          watch_loads):
    import emorec.features.extract as extract

    seen = watch_loads(extract)
    paths = [sorted((tiny_dataset / label).iterdir())[0] for label in ("anger", "awe", "fear")]
    manifest = Manifest([Sample(str(p), p.parent.name, "train") for p in paths], str(tiny_dataset))
    paths[0].write_bytes(b"\xff\xd8 not a jpeg")
    paths[1].unlink()  # gone after the manifest was read, as in a long run
    cache = extract_features(manifest, "test_efficientnet", pretrained=False, image_size=32, grid=0,
                             cache_dir=tmp_path / "cache", num_workers=0, progress=False, log=lambda _: None)
    assert cache.index["stats"]["skipped"] == 2 and cache.split("train").valid.tolist() == [False, False, True]
    assert sorted(seen) == sorted([(paths[0].name, True), (paths[1].name, True), (paths[2].name, False)])
