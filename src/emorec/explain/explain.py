"""`explain_images`: a Grad-CAM overlay per image (or per face) and one grid of them all.

Behind `emorec explain RUN IMAGES --output DIR`. Only PyTorch models can be explained: Grad-CAM
needs gradients, which an exported ONNX graph run by onnxruntime does not give.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emorec.data.inputs import Failure, collect_inputs, load_or_failure
from emorec.errors import EmorecError

GRID_NAME = "explanations.png"
GRID_LIMIT = 24  # cells in the grid; every overlay is still written as its own file


@dataclass
class Explanation:
    path: str  # the input image
    face: int | None  # face number in the photo (from 1) with faces=..., else None
    predicted: str
    probability: float  # of the predicted class
    explained: str  # the class whose heat map was drawn
    output: Path


@dataclass
class ExplainResult:
    explanations: list[Explanation]
    failures: list[Failure] = field(default_factory=list)  # one per unreadable input or photo without a face
    grid: Path | None = None


def _class_index(names: list[str], class_name: str | None) -> int | None:
    if class_name is None:
        return None
    if class_name not in names:
        raise EmorecError(f"--class {class_name} is not a label of this model; choose one of {', '.join(names)}")
    return names.index(class_name)


def _unique(folder: Path, stem: str, used: set[str]) -> Path:
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}_{n}.png"
    used.add(name)
    return folder / name


def explain_images(model: str | Path, inputs, output: str | Path, class_name: str | None = None,
                   device: str = "cpu", faces: str | None = None, margin: float = 0.2,
                   alpha: float = 0.45) -> ExplainResult:
    """Write `output/<image>_<class>.png` (the overlay at the image's size) for each input image,
    for the predicted class or `class_name`, and `output/explanations.png` (a grid of the first
    GRID_LIMIT). With `faces` (a detector name), each detected face's crop is explained instead."""
    import torch

    from emorec.explain.gradcam import gradcam_map, overlay
    from emorec.explain.grid import plot_explanations
    from emorec.run_model import load_run_model

    if Path(model).suffix.lower() == ".onnx":
        raise EmorecError(f"{model} is an ONNX model, which cannot be explained (Grad-CAM needs PyTorch gradients); "
                          "pass the run directory or its .pt checkpoint")
    paths, failures = collect_inputs(inputs)
    if not paths and not failures:
        raise EmorecError(f"no images found in {' '.join(map(str, inputs))}; pass image files, folders or a CSV with a 'path' column")
    loaded = load_run_model(model, device)
    names = list(loaded.label_map.names)
    target = _class_index(names, class_name)
    detector = None
    if faces:
        from emorec.faces.detect import create_detector

        detector = create_detector(faces, device)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    explanations, cells = [], []
    for path in paths:
        photo = load_or_failure(path)
        if isinstance(photo, Failure):
            failures.append(photo)
            continue
        if detector is None:
            pieces = [(None, photo)]
        else:
            from emorec.faces.crop import crop_face

            pieces = [(i, crop_face(photo, face, margin)) for i, face in enumerate(detector.detect(photo), start=1)]
            if not pieces:
                failures.append(Failure(str(path), "no face found"))
        for face, image in pieces:
            with torch.no_grad():
                probs = torch.softmax(loaded.model(loaded.transform(image).unsqueeze(0).to(device)).float(), 1)[0]
            predicted = int(probs.argmax())
            heat, index = gradcam_map(loaded.model, image, loaded.transform, target)
            picture = overlay(image, heat, alpha)
            stem = Path(path).stem + (f"_face{face}" if face else "") + f"_{names[index]}"
            out = _unique(folder, stem, used)
            picture.save(out)
            explanations.append(Explanation(str(path), face, names[predicted], float(probs[predicted]), names[index], out))
            if len(cells) < GRID_LIMIT:
                what = "" if index == predicted else f"\nheat map of {names[index]}"
                name = Path(path).name + (f" face {face}" if face else "")
                cells.append({"image": image, "overlay": picture,
                              "caption": f"{name}\npredicted {names[predicted]} ({float(probs[predicted]):.0%}){what}"})
    grid = None
    if cells:
        which = f"class {class_name}" if class_name else "the predicted class"
        grid = plot_explanations(cells, folder / GRID_NAME, f"Grad-CAM of {which}: image and heat map (red = most relevant)")
    return ExplainResult(explanations, failures, grid)

