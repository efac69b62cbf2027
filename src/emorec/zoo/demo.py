"""The demo that needs nothing but the repository: the built-in models on the sample photos that
scikit-image and matplotlib ship (portraits and scenes).

For each photo: every face found (MTCNN) and labelled by `faces`, the whole photo's emotions by
`photos`, and a Grad-CAM overlay of what `photos` looked at. Written as one annotated picture
(`demo.png`, a row per photo) and a short `report.md`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from emorec.errors import EmorecError

# (file name, package, what the package calls it): portraits for the faces, scenes for the photos.
SAMPLE_PHOTOS = (
    ("astronaut.png", "skimage", "astronaut"),
    ("grace_hopper.jpg", "matplotlib", "grace_hopper.jpg"),
    ("coffee.png", "skimage", "coffee"),
    ("chelsea.png", "skimage", "chelsea"),
    ("rocket.png", "skimage", "rocket"),
)


def write_sample_photos(folder: Path) -> list[Path]:
    """The sample photos as files in `folder` (scikit-image's are arrays in the package)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, package, item in SAMPLE_PHOTOS:
        target = folder / name
        if package == "skimage":
            try:
                from skimage import data
            except ImportError:
                raise EmorecError("the built-in demo's photos come with scikit-image: pip install scikit-image "
                                  "(`make install` does)") from None
            Image.fromarray(getattr(data, item)()).save(target)
        else:
            from matplotlib import cbook

            with cbook.get_sample_data(item) as f:
                Image.open(f).convert("RGB").save(target, quality=95)
        paths.append(target)
    return paths


@dataclass
class PhotoResult:
    path: Path
    faces: list[dict]
    emotions: list[tuple[str, float]]  # the photos model's top 3
    explained: str  # the label the Grad-CAM overlay explains
    panels: tuple[Image.Image, Image.Image] = field(repr=False)  # faces drawn, Grad-CAM overlay


@dataclass
class DemoResult:
    picture: Path
    report: Path
    photos: list[PhotoResult]
    seconds: float


def analyse_photo(path: Path, face_model, photo_model, detector) -> PhotoResult:
    from emorec.data.imageio import load_rgb
    from emorec.explain.gradcam import gradcam_map, overlay
    from emorec.faces.annotate import draw_faces
    from emorec.faces.predict import predict_faces

    image = load_rgb(path)
    faces = predict_faces(face_model, image, detector)
    probs = photo_model.probabilities([image], False)[0]
    order = np.argsort(-probs)[:3]
    loaded = photo_model.loaded
    heat, index = gradcam_map(loaded.model, image, loaded.transform)
    return PhotoResult(path, faces, [(photo_model.labels[i], float(probs[i])) for i in order],
                       photo_model.labels[index], (draw_faces(image, faces, face_model.labels), overlay(image, heat)))


def _picture(results: list[PhotoResult], target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(9, 3.6 * len(results)), squeeze=False)
    for row, result in zip(axes, results):
        faces_text = (", ".join(f"{f['top_k'][0]['label']} {f['top_k'][0]['probability']:.0%}" for f in result.faces)
                      or "no face")
        emotions = ", ".join(f"{label} {p:.0%}" for label, p in result.emotions)
        row[0].imshow(result.panels[0])
        row[0].set_title(f"{result.path.name}: faces {faces_text}", fontsize=9)
        row[1].imshow(result.panels[1])
        row[1].set_title(f"photo: {emotions}\nGrad-CAM for {result.explained}", fontsize=9)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(target, dpi=80)
    plt.close(fig)
    return target


def _report(results: list[PhotoResult], picture: Path, seconds: float, cards: dict[str, Path]) -> str:
    lines = ["# emorec demo: the built-in models on sample photos", "",
             f"Picture: `{picture.name}` (left: faces found and labelled by `faces`; right: what `photos` looked "
             "at, Grad-CAM). Model cards: " + ", ".join(f"`{name}` {path}" for name, path in cards.items()) + ".", "",
             "| photo | faces (label, probability) | whole photo (top 3) |", "|---|---|---|"]
    for r in results:
        faces = "; ".join(f"{f['top_k'][0]['label']} {f['top_k'][0]['probability']:.2f} at "
                          f"{[round(v) for v in f['box']]}" for f in r.faces) or "none found"
        lines.append(f"| {r.path.name} | {faces} | {', '.join(f'{lab} {p:.2f}' for lab, p in r.emotions)} |")
    lines += ["", f"{len(results)} photos in {seconds:.1f} s. The labels are what the models say, not facts about "
                  "the people shown; read the model cards' limits before using them.", ""]
    return "\n".join(lines)


def run_builtin_demo(output: str | Path, photos: list[Path] | None = None, detector: str = "mtcnn") -> DemoResult:
    """Analyse `photos` (default: the shipped sample photos, written to OUTPUT/photos) with the
    built-in models; OUTPUT/demo.png and OUTPUT/report.md."""
    from emorec.faces.detect import create_detector
    from emorec.serving.predict import TorchPredictor
    from emorec.zoo.registry import builtin_model

    started = time.perf_counter()
    output = Path(output)
    photos = photos or write_sample_photos(output / "photos")
    face_model, photo_model = TorchPredictor("faces"), TorchPredictor("photos")
    found = create_detector(detector)
    results = [analyse_photo(p, face_model, photo_model, found) for p in photos]
    picture = _picture(results, output / "demo.png")
    seconds = time.perf_counter() - started
    report = output / "report.md"
    report.write_text(_report(results, picture, seconds, {n: builtin_model(n).card_path for n in ("faces", "photos")}))
    return DemoResult(picture, report, results, seconds)
