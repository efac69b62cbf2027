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
and `PerImagePolicy` draws each image's AutoAugment sub-policy (or RandAugment / TrivialAugment
operations), with torchvision's policy tables and magnitudes, where kornia's and torchvision's
policies pick one for the whole batch. Only the order of the four colour-jitter adjustments is
drawn per batch.

Differences from the PIL path: crops come from the centre square of the shorter-side resize, so
the ends of a landscape or portrait photo's longer side (which the eval centre crop drops too)
are never seen and the crop scale is relative to the square; the crop is resampled bilinearly;
the policy operations run on float images (kornia's ops), not 8-bit PIL ones.

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
    except ImportError as e:
        raise EmorecError(f"augment.backend=tensor needs kornia ({e}); install it with `pip install kornia` "
                          "or use --set augment.backend=pil") from e
    return K


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to [0, 1] (torchvision's autocontrast)."""
    low, high = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
    flat = high <= low
    scale = torch.where(flat, torch.ones_like(high), 1.0 / (high - low).clamp_min(1e-12))
    return ((x - torch.where(flat, torch.zeros_like(low), low)) * scale).clamp(0, 1)


def _pair(m: torch.Tensor, first: bool) -> torch.Tensor:
    zero = torch.zeros_like(m)
    return torch.stack([m, zero] if first else [zero, m], dim=1)


def _operations():
    """torchvision's policy operations on float [0, 1] batches, with one magnitude per image
    (kornia's functional ops take per-image factors). Geometry as torchvision: shears about the
    top-left corner, translations in pixels, zeros outside."""
    from kornia import enhance
    from kornia.geometry import transform as geometry

    return {
        "ShearX": lambda x, m: geometry.shear(x, _pair(m, True)),
        "ShearY": lambda x, m: geometry.shear(x, _pair(m, False)),
        "TranslateX": lambda x, m: geometry.translate(x, _pair(m.trunc(), True)),
        "TranslateY": lambda x, m: geometry.translate(x, _pair(m.trunc(), False)),
        "Rotate": lambda x, m: geometry.rotate(x, m),
        "Brightness": lambda x, m: (x * (1 + m).view(-1, 1, 1, 1)).clamp(0, 1),
        "Color": lambda x, m: enhance.adjust_saturation_with_gray_subtraction(x, 1 + m),
        "Contrast": lambda x, m: enhance.adjust_contrast_with_mean_subtraction(x, 1 + m),
        "Sharpness": lambda x, m: enhance.sharpness(x, 1 + m),
        "Posterize": lambda x, m: enhance.posterize(x, m.round().long()),
        "Solarize": lambda x, m: enhance.solarize(x, m / 255),  # torchvision's thresholds are on the 0-255 scale
        "AutoContrast": lambda x, m: _autocontrast(x),
        "Equalize": lambda x, m: enhance.equalize(x),
        "Invert": lambda x, m: 1 - x,
    }


class PerImagePolicy(nn.Module):
    """torchvision's AutoAugment / RandAugment / TrivialAugmentWide on a batch, drawn per image.

    `subpolicies`: sequences of (operation, probability, magnitude bin) as torchvision's
    AutoAugment lists them (bin -1: a bin drawn uniformly per image, TrivialAugment's rule; bin
    None: no magnitude); `space`: torchvision's `_augmentation_space` (operation -> (magnitudes,
    signed)). Each image draws its sub-policy (`rounds` times), whether each operation fires and
    the sign of signed magnitudes, as torchvision does for one image. The batch then goes through
    each operation once, for the images that drew it, with their own magnitudes: a batch costs
    one call per distinct operation and step, not one per image (or per sub-policy)."""

    def __init__(self, subpolicies, space: dict, rounds: int = 1):
        super().__init__()
        self.names = list(space)
        self.ops = _operations()
        unknown = [n for n in self.names if n not in self.ops and n != "Identity"]
        if unknown:
            raise ValueError(f"no batched form of the policy operations {unknown}")
        bins = max(int(m.numel()) if torch.is_tensor(m) else 1 for m, _ in space.values())
        table = torch.zeros(len(self.names), bins)
        for i, (mags, _signed) in enumerate(space.values()):
            if torch.is_tensor(mags) and mags.ndim > 0:
                table[i, : mags.numel()] = mags.float()
        self.magnitudes, self.bins = table, bins
        self.signed = torch.tensor([bool(signed) for _, signed in space.values()])
        index = {n: i for i, n in enumerate(self.names)}
        steps = len(subpolicies[0])
        self.op = torch.tensor([[index[sp[j][0]] for sp in subpolicies] for j in range(steps)])
        self.prob = torch.tensor([[float(sp[j][1]) for sp in subpolicies] for j in range(steps)])
        self.bin = torch.tensor([[-2 if sp[j][2] is None else int(sp[j][2]) for sp in subpolicies]
                                 for j in range(steps)])
        self.rounds = rounds

    def draw(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per step, (operation index or -1 for none, magnitude) of each image; CPU generator."""
        out = []
        for _ in range(self.rounds):
            chosen = torch.randint(self.op.shape[1], (count,))
            for j in range(self.op.shape[0]):
                op, prob, bins = self.op[j, chosen], self.prob[j, chosen], self.bin[j, chosen]
                fires = torch.rand(count) < prob
                bins = torch.where(bins == -1, torch.randint(self.bins, (count,)), bins.clamp_min(0))
                magnitude = self.magnitudes[op, bins]
                negative = self.signed[op] & (torch.randint(2, (count,)) == 1)
                out.append((torch.where(fires, op, -1), torch.where(negative, -magnitude, magnitude)))
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        for op, magnitude in self.draw(len(images)):
            out = images.clone()
            for k in op.unique().tolist():
                if k < 0 or self.names[k] == "Identity":
                    continue
                rows = (op == k).nonzero().flatten()
                m = magnitude[rows].to(images.device, images.dtype)
                rows = rows.to(images.device)
                out.index_copy_(0, rows, self.ops[self.names[k]](images.index_select(0, rows), m))
            images = out
        return images


def _policy(name: str, size: int) -> PerImagePolicy | None:
    """`augment.auto_augment` with torchvision's settings (ImageNet AutoAugment; RandAugment 2
    operations at magnitude 9 of 31 bins; TrivialAugmentWide), drawn per image."""
    if name == "autoaugment":
        policy = T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)
        return PerImagePolicy(policy.policies, policy._augmentation_space(10, (size, size)))
    if name == "randaugment":
        policy = T.RandAugment()
        space = policy._augmentation_space(policy.num_magnitude_bins, (size, size))
        return PerImagePolicy([[(n, 1.0, policy.magnitude)] for n in space], space, rounds=policy.num_ops)
    if name == "trivialaugment":
        policy = T.TrivialAugmentWide()
        space = policy._augmentation_space(policy.num_magnitude_bins)
        return PerImagePolicy([[(n, 1.0, -1)] for n in space], space)
    return None


class BatchAugment(nn.Module):
    """uint8 (B, 3, S, S) on any device -> augmented, normalised float32 (B, 3, size, size) there.

    The steps and their settings follow `build_train_transform` (`cfg.augment`); `seed` fixes
    every random draw, so the same batch and seed give the same result."""

    def __init__(self, cfg: Config, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        K = _kornia()
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
        policy = _policy(a.auto_augment, size)
        if policy is not None:
            steps.append(policy)
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
