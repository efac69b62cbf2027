"""torchvision transform pipelines for training and evaluation, built from `cfg.augment`.

Training: RandomResizedCrop (scale from `scale_min`: emotion cues are often global, so crops keep
at least half the image by default), flip, rotation, colour jitter, perspective, one automatic
policy (AutoAugment ImageNet, RandAugment or TrivialAugmentWide), then tensor, normalisation and
RandomErasing (which works on tensors). Evaluation is the standard Resize(size / 0.875) +
CenterCrop(size), the form data/preprocess.py re-implements without torch.
"""

from __future__ import annotations

from typing import Sequence

from torchvision import transforms as T

from emorec.config import Config
from emorec.data.views import CROP_FRACTION

INTERPOLATION = T.InterpolationMode.BICUBIC  # timm's default for the recipe's backbones


def _auto_augment(name: str):
    if name == "autoaugment":
        return T.AutoAugment(T.AutoAugmentPolicy.IMAGENET, interpolation=INTERPOLATION)
    if name == "randaugment":
        return T.RandAugment(interpolation=INTERPOLATION)
    if name == "trivialaugment":
        return T.TrivialAugmentWide(interpolation=INTERPOLATION)
    return None


def build_train_transform(cfg: Config, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    a, size = cfg.augment, cfg.data.image_size
    steps: list = [T.RandomResizedCrop(size, scale=(a.scale_min, 1.0), interpolation=INTERPOLATION)]
    if a.hflip > 0:
        steps.append(T.RandomHorizontalFlip(a.hflip))
    if a.rotation > 0:
        steps.append(T.RandomRotation(a.rotation, interpolation=T.InterpolationMode.BILINEAR))
    if a.color_jitter > 0:
        j = a.color_jitter
        steps.append(T.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 10, 0.5)))
    if a.perspective > 0 and a.perspective_p > 0:
        steps.append(T.RandomPerspective(a.perspective, p=a.perspective_p))
    policy = _auto_augment(a.auto_augment)
    if policy is not None:
        steps.append(policy)
    steps += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    if a.random_erasing > 0:
        steps.append(T.RandomErasing(p=a.random_erasing, value="random"))
    return T.Compose(steps)


def eval_resize_size(image_size: int) -> int:
    """Shorter side the eval transform resizes to before its centre crop of `image_size`."""
    return int(image_size / CROP_FRACTION)


def build_eval_transform(cfg: Config, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    size = cfg.data.image_size
    return T.Compose([
        T.Resize(eval_resize_size(size), interpolation=INTERPOLATION),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(list(mean), list(std)),
    ])


def ten_crop_input_transform(eval_transform: T.Compose) -> T.Compose:
    """`eval_transform` with its centre crop widened to the whole resized square: the input from
    which `evaluation.tta.ten_crop_views` cuts its ten views (the numpy twin is
    `Preprocessing.ten_crop_input`)."""
    steps, full = [], None
    for step in eval_transform.transforms:
        if isinstance(step, T.Resize):
            full = min([step.size] if isinstance(step.size, int) else step.size)
        elif isinstance(step, T.CenterCrop) and full is not None:
            step = T.CenterCrop(full)
        steps.append(step)
    return T.Compose(steps)
