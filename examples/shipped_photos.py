"""Write the photos that scikit-image and matplotlib ship into a folder, for trying
`emorec predict --faces` and `emorec explain` without data of your own.

    python examples/shipped_photos.py photos/

Writes astronaut.png, grace_hopper.png, camera.png (one face each), coffee.png and chelsea.png
(no human face), and portraits.png: the three portraits side by side, a photo with three faces.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.cbook
import skimage.data
from PIL import Image


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    photos = {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in ("astronaut", "camera", "coffee", "chelsea")}
    photos["grace_hopper"] = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    for name, photo in photos.items():
        photo.save(out / f"{name}.png")
    height = 360
    row = [photos[n].resize((round(photos[n].width * height / photos[n].height), height), Image.Resampling.LANCZOS)
           for n in ("grace_hopper", "astronaut", "camera")]
    portraits = Image.new("RGB", (sum(p.width for p in row), height), "white")
    x = 0
    for photo in row:
        portraits.paste(photo, (x, 0))
        x += photo.width
    portraits.save(out / "portraits.png")
    print(f"wrote {len(photos) + 1} photos to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
