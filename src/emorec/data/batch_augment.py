"""The recipe's training augmentation on whole batches on the training device (`augment.backend:
tensor`), with kornia.augmentation.

The per-image PIL path (data/transforms.py) spends ~15 ms of CPU per 224 px image on AutoAugment,
rotation, perspective and erasing, so loader workers cap GPU training at a fraction of the step's
speed (benchmarks/RESULTS.md). Here the workers only decode and resize (`build_decode_transform`:
uint8 squares of `eval_resize_size(image_size)` px, the region the eval centre crop is taken
from), and `BatchAugment` runs RandomResizedCrop, flip, rotation, colour jitter, perspective, the
automatic policy, normalisation and RandomErasing on the batch where it lands, as NVIDIA DALI,
FFCV and kornia-based pipelines do.

Every image gets its own random parameters: kornia draws them per row (`same_on_batch=False`),
and `PerSamplePolicy` draws each image's AutoAugment sub-policy (or RandAugment / TrivialAugment
operation), where kornia's policies pick one for the whole batch. Only the order of the four
colour-jitter adjustments is drawn per batch.

Differences from the PIL path: crops come from the centre square of the shorter-side resize, so
the ends of a landscape or portrait photo's longer side (which the eval centre crop drops too)
are never seen and the crop scale is relative to the square; the crop is resampled bilinearly;
AutoAugment magnitudes are drawn within their bin (kornia's convention), not at the bin's value;
RandAugment draws its two operations independently (as torchvision does) from kornia's list.

Randomness: `BatchAugment(images, seed)` is a pure function of its inputs. It draws every
parameter from the CPU generator (kornia samples there unless its modules are moved, which this
class never does) and the erasing noise from the device generator, both seeded from `seed` inside
`torch.random.fork_rng`, so the caller's random streams (dropout, MixUp) are untouched.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision import transforms as T

from emorec.config import Config
from emorec.data.transforms import INTERPOLATION, eval_resize_size
from emorec.errors import EmorecError


def build_decode_transform(cfg: Config) -> T.Compose:
    """Worker side of the `tensor` backend: PIL image -> uint8 (3, S, S), S = eval_resize_size.

    Shorter side to S, then the centre square: a fixed size, so batches stack, with room for
    RandomResizedCrop to pick its crop of `image_size`."""
    side = eval_resize_size(cfg.data.image_size)
    return T.Compose([T.Resize(side, interpolation=INTERPOLATION), T.CenterCrop(side), T.PILToTensor()])


def _kornia():
    try:
        import kornia.augmentation as K
        from kornia.augmentation import auto
    except ImportError as e:  # an optional-looking dependency: say how to get it
        raise EmorecError(f"augment.backend=tensor needs kornia ({e}); install it with `pip install kornia` "
                          "or use --set augment.backend=pil") from e
    return K, auto


class _ChosenSubPolicy:
    """A kornia policy whose sub-policy for the next call is set by the caller (`chosen`)."""

    chosen: list[int] | None = None

    def get_forward_sequence(self, params=None):
        if params is None and self.chosen is not None:
            return self.get_children_by_indices(self.chosen)
        return super().get_forward_sequence(params)


def _policy(name: str):
    """(kornia policy with a settable sub-policy, rounds per image) for `augment.auto_augment`."""
    _, auto = _kornia()
    # torchvision's defaults: the ImageNet AutoAugment policy; RandAugment 2 operations at magnitude 9 of 30.
    if name == "autoaugment":
        cls, kwargs, rounds = auto.AutoAugment, {"policy": "imagenet"}, 1
    elif name == "randaugment":
        cls, kwargs, rounds = auto.RandAugment, {"n": 1, "m": 9}, 2
    elif name == "trivialaugment":
        cls, kwargs, rounds = auto.TrivialAugment, {}, 1
    else:
        return None, 0
    chosen_cls = type(f"PerSample{cls.__name__}", (_ChosenSubPolicy, cls), {})
    return chosen_cls(transformation_matrix_mode="skip", **kwargs), rounds


class PerSamplePolicy(nn.Module):
    """Applies a kornia policy (`AutoAugment`, `RandAugment`, `TrivialAugment` or any
    `PolicyAugmentBase` mixed with `_ChosenSubPolicy`) with a sub-policy drawn per image.

    kornia draws one sub-policy per call for the whole batch; here each image draws its own
    (uniformly, `rounds` times), and the images that drew the same one go through it together, so
    a batch costs at most one call per sub-policy and round."""

    def __init__(self, policy, rounds: int = 1):
        super().__init__()
        self.policy, self.rounds = policy, rounds

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        count = len(list(self.policy.children()))
        for _ in range(self.rounds):
            choice = torch.randint(count, (len(images),))  # CPU generator, like kornia's draws
            out = images.clone()
            for k in choice.unique().tolist():
                rows = (choice == k).nonzero().flatten().to(images.device)
                self.policy.chosen = [k]
                try:
                    out.index_copy_(0, rows, self.policy(images.index_select(0, rows)))
                finally:
                    self.policy.chosen = None
            images = out
        return images


class BatchAugment(nn.Module):
    """uint8 (B, 3, S, S) on any device -> augmented, normalised float32 (B, 3, size, size) there.

    The steps and their settings follow `build_train_transform` (`cfg.augment`); `seed` fixes
    every random draw, so the same batch and seed give the same result."""

    def __init__(self, cfg: Config, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        K, _ = _kornia()
        a, size = cfg.augment, cfg.data.image_size
        # One batched warp instead of a loop over images. Bilinear, not the PIL path's bicubic: a
        # bicubic warp reads zeros past the border and darkens crops that touch it.
        self.crop = K.RandomResizedCrop((size, size), scale=(a.scale_min, 1.0), resample="BILINEAR",
                                        cropping_mode="resample")
        steps: list[nn.Module] = []
        if a.hflip > 0:
            steps.append(K.RandomHorizontalFlip(p=a.hflip))
        if a.rotation > 0:
            steps.append(K.RandomRotation(a.rotation, p=1.0))  # torchvision rotates every image
        if a.color_jitter > 0:
            j = a.color_jitter
            steps.append(K.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 10, 0.5), p=1.0))
        if a.perspective > 0 and a.perspective_p > 0:
            steps.append(K.RandomPerspective(a.perspective, p=a.perspective_p))
        policy, rounds = _policy(a.auto_augment)
        if policy is not None:
            steps.append(PerSamplePolicy(policy, rounds))
        self.steps = nn.Sequential(*steps)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        # Erasing boxes come from kornia; the fill is per-pixel N(0, 1) noise, torchvision's value="random".
        self.erase = K.RandomErasing(p=a.random_erasing) if a.random_erasing > 0 else None

    @torch.no_grad()
    def forward(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"BatchAugment takes uint8 (B, 3, S, S) batches, got {images.dtype} {tuple(images.shape)}")
        device = images.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.random.default_generator.manual_seed(seed)
            if device.type == "cuda":
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
            x = self.crop(images.float().div_(255))
            x = self.steps(x)
            x = (x - self.mean.to(device)) / self.std.to(device)
            if self.erase is not None:
                keep = self.erase(torch.ones_like(x[:, :1]))
                x = torch.where(keep > 0, x, torch.randn_like(x))
        return x.contiguous()
