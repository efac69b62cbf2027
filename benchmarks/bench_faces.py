"""Face detection: recall, false detections and speed on FER-2013 collages and shipped photos.

Collages: 24 FER-2013 validation faces (48 px, grayscale) upscaled to 120-200 px and pasted on a
background (scikit-image's grass, brick, gravel, coins, coffee, rocket, Hubble deep field, and a
plain grey), built by `emorec.faces.collage.make_collage`; the pasted squares are the true boxes.
A face counts as found when a detection overlaps it at IoU >= 0.3 (the pasted square is the
whole crop, wider than a detector's face box), one detection per face; detections matching no
face are false detections. Photos: the three portraits scikit-image and matplotlib ship
(astronaut, camera, grace_hopper: one face each) and eight without a face (coffee, chelsea the
cat, rocket, brick, grass, gravel, coins, hubble_deep_field).

emorec     `create_detector("mtcnn")`: MTCNN from facenet-pytorch, faces with confidence >= 0.9.
reference  `create_detector("haar")`: OpenCV 4's frontal-face Haar cascade (scale 1.1, 5 neighbours).
Also       MTCNN keeping every face its last stage accepts (confidence >= 0.7).

    python benchmarks/bench_faces.py            # 10 collages (240 faces)
    python benchmarks/bench_faces.py --quick    # 2 collages (48 faces)
Last line: `faces: emorec X vs reference Y recall ratio=R` (MTCNN vs Haar recall on the collages).
"""

from __future__ import annotations

import csv
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "faces"
FACES_PER_COLLAGE = 24
IOU = 0.3
BACKGROUNDS = ("grass", "brick", "gravel", "coins", "coffee", "rocket", "hubble_deep_field", "grey")
PORTRAITS = ("astronaut", "camera", "grace_hopper")
NO_FACE = ("coffee", "chelsea", "rocket", "brick", "grass", "gravel", "coins", "hubble_deep_field")


def shipped(name: str):
    from PIL import Image

    if name == "grey":
        return Image.new("RGB", (64, 64), (128, 128, 128))
    if name == "grace_hopper":
        import matplotlib.cbook

        return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def collages(fer: Path, count: int, seed: int = 0):
    """`count` (photo, true boxes, background name) collages of distinct FER-2013 val faces."""
    from PIL import Image

    from emorec.faces.collage import make_collage

    with (fer / "labels.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"]
    picked = random.Random(seed).sample(rows, count * FACES_PER_COLLAGE)
    out = []
    for i in range(count):
        faces = [Image.open(fer / r["path"]) for r in picked[i * FACES_PER_COLLAGE : (i + 1) * FACES_PER_COLLAGE]]
        background = BACKGROUNDS[i % len(BACKGROUNDS)]
        photo, boxes = make_collage(faces, shipped(background), seed=seed + i)
        out.append((photo, boxes, background))
    return out


def measure(detector, sets, photos) -> dict:
    from emorec.faces.collage import match_boxes

    found = false = total = 0
    seconds, per_background = [], {}
    for photo, boxes, background in sets:
        start = time.perf_counter()
        faces = detector.detect(photo)
        seconds.append(time.perf_counter() - start)
        hits, wrong = match_boxes(boxes, [f.box for f in faces], IOU)
        found, false, total = found + hits, false + wrong, total + len(boxes)
        per_background[background] = {"recall": hits / len(boxes), "false_detections": wrong}
    portraits = [len(detector.detect(photos[name])) for name in PORTRAITS]
    empty = {name: len(detector.detect(photos[name])) for name in NO_FACE}
    return {
        "recall": found / total,
        "faces": total,
        "false_detections": false,
        "precision": found / (found + false) if found + false else None,
        "median_s_per_collage": statistics.median(seconds),
        "collage_size": list(sets[0][0].size),
        "per_background": per_background,
        "portraits_with_one_face": sum(n == 1 for n in portraits),
        "portrait_detections": dict(zip(PORTRAITS, portraits)),
        "false_detections_on_photos_without_faces": empty,
    }


def main() -> int:
    p = C.parser(__doc__)
    p.add_argument("--collages", type=int, default=None, help="collages of 24 faces (default: 10, --quick: 2)")
    p.add_argument("--detectors", default="mtcnn,mtcnn-0.7,haar", help="comma-separated subset of mtcnn, mtcnn-0.7, haar")
    args = p.parse_args()
    C.apply_threads(args)
    count = args.collages or (2 if args.quick else 10)
    fer = C.shared_dataset("fer2013")
    if fer is None:
        C.finish(NAME, args, None, None, "recall", {}, notes=["../shared/datasets/fer2013 is absent: no collages to measure"])
        return 0
    from emorec.faces.detect import MTCNNDetector, create_detector

    sets = collages(fer, count)
    photos = {name: shipped(name) for name in PORTRAITS + NO_FACE}
    detectors = {"mtcnn": ("mtcnn", lambda: create_detector("mtcnn")),
                 "mtcnn-0.7": ("mtcnn (confidence >= 0.7)", lambda: MTCNNDetector(min_score=0.7)),
                 "haar": ("haar", lambda: create_detector("haar"))}
    results, notes = {}, []
    for key in args.detectors.split(","):
        if key not in detectors:
            p.error(f"--detectors: unknown '{key}'; choose from {', '.join(detectors)}")
        name, build = detectors[key]
        try:
            detector = build()
        except Exception as e:  # noqa: BLE001 - a detector that cannot be built is reported, not invented
            notes.append(f"{name} unavailable ({type(e).__name__}: {e})")
            continue
        C.log(f"measuring {name} on {count} collages")
        results[name] = measure(detector, sets, photos)
    rows = [[name, r["recall"], r["false_detections"], r["median_s_per_collage"], f"{r['portraits_with_one_face']}/{len(PORTRAITS)}",
             sum(r["false_detections_on_photos_without_faces"].values())] for name, r in results.items()]
    print(C.table(rows, ["detector", f"recall@IoU{IOU}", "false det.", "s/collage", "portraits", "false det. (no-face photos)"]))
    emorec = results.get("mtcnn", {}).get("recall")
    reference = results.get("haar", {}).get("recall")
    C.finish(NAME, args, emorec, reference, f"recall at IoU {IOU}", {"collages": count, "faces_per_collage": FACES_PER_COLLAGE,
             "detectors": results}, notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
