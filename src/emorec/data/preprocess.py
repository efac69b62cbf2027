"""Evaluation preprocessing with PIL and numpy only, for serving without torch.

`Preprocessing` is a plain description of the eval transform (resize, centre crop, scale to
[0, 1], normalise). It is read off the run's torchvision transform, stored with exported models
(ONNX metadata and a JSON file), and applied here with PIL + numpy. It reproduces torchvision's
arithmetic (output-size rounding, PIL resampling, crop offsets) so the ONNX path sees the same
pixels as the PyTorch path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

from emorec.data.views import crop_box, ten_crop_boxes
from emorec.errors import EmorecError

PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass
class Preprocessing:
    resize: list[int]  # [short side] or [height, width], as torchvision's Resize takes it
    crop: list[int]  # [height, width] of the centre crop
    interpolation: str  # key of PIL_FILTERS
    mean: list[float]
    std: list[float]

    @property
    def input_size(self) -> int:
        return self.crop[0]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        return cls(**{k: values[k] for k in ("resize", "crop", "interpolation", "mean", "std")})

    @classmethod
    def from_transform(cls, transform, mean, std) -> "Preprocessing":
        """Read Resize and CenterCrop off a torchvision Compose (v1 or v2)."""
        resize = crop = interpolation = None
        for step in getattr(transform, "transforms", []):
            kind = type(step).__name__
            if kind == "Resize":
                resize = [step.size] if isinstance(step.size, int) else list(step.size)
                interpolation = str(getattr(step.interpolation, "value", step.interpolation)).lower()
            elif kind == "CenterCrop":
                crop = list(step.size) if not isinstance(step.size, int) else [step.size, step.size]
        if resize is None or crop is None or interpolation not in PIL_FILTERS:
            raise EmorecError(
                f"eval transform {transform!r} is not Resize + CenterCrop + Normalize; "
                "export and ONNX serving need that form (see data.transforms.build_eval_transform)"
            )
        return cls(resize=resize, crop=crop, interpolation=interpolation, mean=list(map(float, mean)), std=list(map(float, std)))

    def ten_crop_input(self) -> "Preprocessing":
        """The same resize with a centre square as large as the resized image's shorter side (for
        a [short side] resize: `resize` px), from which `ten_crop_views_numpy` cuts the views."""
        full = min(self.resize)
        return replace(self, crop=[full, full])

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after Resize, with torchvision's rounding."""
        if len(self.resize) == 2:
            return self.resize[1], self.resize[0]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize[0], int(self.resize[0] * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image -> normalised float32 array (3, H, W)."""
        size = self.resized_size(*image.size)
        if size != image.size:
            image = image.resize(size, PIL_FILTERS[self.interpolation])
        crop_h, crop_w = self.crop
        width, height = image.size
        if crop_w > width or crop_h > height:
            # torchvision pads with zeros before cropping; only tiny inputs reach this.
            canvas = Image.new("RGB", (max(width, crop_w), max(height, crop_h)))
            canvas.paste(image, ((max(width, crop_w) - width) // 2, (max(height, crop_h) - height) // 2))
            image, (width, height) = canvas, canvas.size
        top = int(round((height - crop_h) / 2.0))
        left = int(round((width - crop_w) / 2.0))
        image = image.crop((left, top, left + crop_w, top + crop_h))
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _resize_bilinear(channels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, h, w) float32 -> (C, height, width) with PIL's bilinear filter on float ('F') images."""
    return np.stack(
        [np.asarray(Image.fromarray(c).resize((width, height), Image.Resampling.BILINEAR)) for c in channels]
    )


def tta_views_numpy(batch: np.ndarray, hflip: bool = True, crops: int = 0) -> list[np.ndarray]:
    """numpy twin of `evaluation.tta.tta_views` for (B, C, H, W) float32 batches."""
    views = [batch]
    if hflip:
        views.append(np.ascontiguousarray(batch[..., ::-1]))
    height, width = batch.shape[-2:]
    for i in range(crops):
        top, left, side = crop_box(width, i)
        patch = batch[:, :, top : top + side, left : left + side]
        views.append(np.stack([_resize_bilinear(np.ascontiguousarray(img), height, width) for img in patch]).astype(np.float32))
    return views


def ten_crop_views_numpy(batch: np.ndarray, side: int) -> list[np.ndarray]:
    """numpy twin of `evaluation.tta.ten_crop_views`: (B, C, F, F) -> ten (B, C, side, side) views."""
    crops = [np.ascontiguousarray(batch[:, :, top : top + side, left : left + side])
             for top, left in ten_crop_boxes(batch.shape[-1], side)]
    return crops + [np.ascontiguousarray(c[..., ::-1]) for c in crops]
