"""The backbones a search tries, checked before any of its budget is spent.

A misspelt timm name or a weights file of another model would otherwise fail minutes later, at
the start of the extraction (or, for a second backbone, after the first one's candidates). The
checks are cheap: the name against timm's registry, the file's tensor names and shapes against
the model built on the meta device (no memory, no initialisation). Only a file whose names do
not line up (an original release that timm's checkpoint filter renames) pays for a real build
with the weights, which decides.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from emorec.errors import EmorecError

# Names timm resolves outside its registry (a hub repository, a local folder).
_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


@dataclass
class BackboneChoice:
    """A backbone to try: a timm name with a local weights file, timm's hub weights, or (tests,
    smoke runs) random weights."""

    name: str
    weights: str | None = None
    pretrained: bool = True

    @classmethod
    def parse(cls, text: str, random_init: bool = False) -> BackboneChoice:
        """'NAME' (hub weights) or 'NAME=WEIGHTS_FILE' (local)."""
        name, _, weights = text.partition("=")
        if not name.strip():
            raise EmorecError(f"--backbone '{text}': write NAME or NAME=WEIGHTS_FILE, e.g. "
                              "tf_efficientnet_lite0=../shared/weights/tf_efficientnet_lite0/model.safetensors")
        if weights and not Path(weights).is_file():
            raise EmorecError(f"--backbone {text}: weights file not found: {weights}; pass an existing .safetensors "
                              "or .pth file")
        return cls(name.strip(), weights or None, not random_init and not weights)

    def check(self) -> None:
        """Raise a one-line `EmorecError` naming this backbone and the fix when timm does not know
        its name, when it asks for hub weights timm has none of, or when its weights file is
        missing, unreadable or made for another model."""
        from emorec.models.backbone_group import is_group, member_names, member_weights

        names = member_names(self.name) if is_group(self.name) else [self.name]
        files = member_weights(self.name, self.weights) if is_group(self.name) else [self.weights]
        for name, weights in zip(names, files):
            label = f"--backbone {self.name}" + (f"={self.weights}" if self.weights else "")
            _check_name(name, label)
            if weights is not None:
                _check_weights(name, Path(weights), label)
            elif self.pretrained and not name.startswith(_HUB_PREFIXES):
                import timm

                if not timm.is_model_pretrained(name):
                    raise EmorecError(f"{label}: timm has no pretrained weights for {name}; pass a weights file "
                                      f"(--backbone {name}=FILE) or --random-init")


def _check_name(name: str, label: str) -> None:
    import timm

    if name.startswith(_HUB_PREFIXES) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "e.g. resnet50, tf_efficientnet_lite0, convnext_tiny"
    raise EmorecError(f"{label}: '{name}' is not a timm model; pick one from timm.list_models() ({hint})")


def _check_weights(name: str, path: Path, label: str) -> None:
    """The file exists, holds tensors, and (almost) every tensor of `name` is in it with its shape."""
    import torch

    from emorec.models.timm_backbone import (
        MAX_MISSING_FRACTION,
        _read_state_dict,
        _strip_prefixes,
        create_timm_backbone,
    )

    if not path.is_file():
        raise EmorecError(f"{label}: weights file not found: {path}; pass an existing .safetensors or .pth file "
                          f"made for {name}")
    try:
        state = _read_state_dict(path)
    except EmorecError as e:
        raise EmorecError(f"{label}: {e}") from None
    with torch.device("meta"):
        own = create_timm_backbone(name).state_dict()
    state = _strip_prefixes(state, own)
    total = sum(t.numel() for t in own.values())
    matched = sum(t.numel() for k, t in own.items() if k in state and tuple(state[k].shape) == tuple(t.shape))
    if matched >= (1 - MAX_MISSING_FRACTION) * total:
        return
    try:  # timm's checkpoint filter may rename or reshape what does not line up: the real build decides
        create_timm_backbone(name, weights=path)
    except EmorecError as e:
        why = str(e).split(";")[0]
        raise EmorecError(f"{label}: not weights of {name} ({why}); pass the file made for {name}, or the backbone "
                          "name the file belongs to") from None
