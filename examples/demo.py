"""`make demo`: the cost of the paper's four headline configurations and a forward pass of each,
then Google's released 1.0/224 model classifying the shared photos (offline, from
``$MOBILENET_V1_DATA``, which the Makefile sets to ../shared/data)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from mobilenet_v1 import Classifier, mobilenet_v1, model_cost

DATA = Path(os.environ.get("MOBILENET_V1_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
os.environ["MOBILENET_V1_DATA"] = str(DATA)  # where the library finds Google's files
PHOTOS = DATA / "images"
GOOGLE_MODEL = "mobilenet_v1_1.0_224_quant"

PAPER_CONFIGS = ((1.0, 224), (0.75, 192), (0.5, 160), (0.25, 128))


def main() -> None:
    torch.manual_seed(0)
    print(f"{'alpha':>5} {'res':>4} {'mult-adds':>13} {'params':>10} {'output':>12} {'forward ms':>11}")
    for alpha, res in PAPER_CONFIGS:
        model = mobilenet_v1(alpha=alpha).eval()
        cost = model_cost(model.config, res)
        x = torch.randn(1, 3, res, res)
        with torch.inference_mode():
            start = time.perf_counter()
            out = model(x)
            ms = 1000 * (time.perf_counter() - start)
        print(f"{alpha:>5g} {res:>4} {cost.mult_adds:>13,} {cost.params:>10,} {tuple(out.shape)!s:>12} {ms:>11.1f}")
    classify_photos()


def classify_photos() -> None:
    """Top-5 of Google's weights on the shared photos; nothing is downloaded."""
    if not PHOTOS.is_dir():
        print(f"\n(skipping Google's weights: {PHOTOS} not found)")
        return
    classifier = Classifier.from_weights(GOOGLE_MODEL)
    cost = model_cost(classifier.model.config, classifier.preprocessing.resolution)
    size = f"{cost.mult_adds / 1e6:.1f} M mult-adds, {cost.params / 1e6:.2f} M params"
    print(f"\n{GOOGLE_MODEL} (Google's weights, float import): {size}")
    photos = sorted(PHOTOS.iterdir())
    for photo, top in zip(photos, classifier.predict(photos, k=5), strict=True):
        print(photo.name)
        for label, p in top:
            print(f"  {p:6.1%}  {label}")


if __name__ == "__main__":
    main()
