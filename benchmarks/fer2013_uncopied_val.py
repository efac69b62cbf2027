"""Write the part of FER-2013's official val split (PublicTest) that has no copy in Training.

FER-2013 holds the same faces more than once, across splits too (`emorec data check` on
../shared/datasets/fer2013: 182 exact and 280 near groups in two splits). A model that saw a face
in training scores it too well in val, so RESULTS.md also reports val without those images, as
it reports the seed-0 test carve without its copies. Exact copies (byte- or pixel-identical) are
what the earlier test figures dropped; `--near` also drops near-copies (perceptual hash).

    python benchmarks/fer2013_uncopied_val.py --output runs/fer2013_val_uncopied.csv
    emorec evaluate runs/faces --data runs/fer2013_val_uncopied.csv --tta ten-crop
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emorec.data.leakage import samples_without_copies
from emorec.data.manifest import Manifest, read_manifest

SHARED_FER = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fer2013"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED_FER), help="FER-2013 folder or labels.csv (default: ../shared)")
    p.add_argument("--output", required=True, help="CSV to write (path,label,split)")
    p.add_argument("--near", action="store_true", help="also drop near-copies, not only exact ones")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    manifest = read_manifest(args.data)
    kept, dropped = samples_without_copies(manifest, "val", "train", args.near, args.workers)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Manifest(kept, manifest.source).to_csv(args.output)
    print(f"{args.output}: {len(kept)} val images, {dropped} dropped for a{' near or' if args.near else 'n'} "
          f"exact copy in train")


if __name__ == "__main__":
    main()
