"""Imagenette small enough to travel to a lent GPU machine (the `device` tool's 64 MiB cap).

Train photos become 144x144 JPEG (quality 80), val photos 146x146 (quality 85: the shorter
side the 128 px evaluation resizes to), every one of them, in ``OUT/data_train/train`` and
``OUT/data_val/val`` (the two halves travel in separate calls; ``gpu_distill.sh``).

python benchmarks/train/gpu_shrink_imagenette.py [--out .gpu]
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA
from PIL import Image

SIZES = {"train": (144, 80), "val": (146, 85)}


def shrink(job: tuple[Path, Path, int, int]) -> None:
    source, target, side, quality = job
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.convert("RGB").resize((side, side), Image.BICUBIC).save(target, "JPEG", quality=quality)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    args = parser.parse_args()
    source = DATA / "imagenette"
    jobs = [
        (f, args.out / f"data_{split}" / split / f.parent.name / f.name, side, quality)
        for split, (side, quality) in SIZES.items()
        for f in sorted((source / split).glob("*/*.JPEG"))
    ]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(shrink, jobs, chunksize=64))
    print(f"{len(jobs)} photos -> {args.out}")


if __name__ == "__main__":
    main()
