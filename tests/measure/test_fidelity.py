"""Float import vs Google's interpreter (LiteRT) on the shared photos and an Imagenette subset.

The full validation set is in benchmarks/weights/fidelity.py (results in docs/weights.md); here a
fixed subset keeps CI fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (Google's interpreter) is not installed")
pytest.importorskip("tflite", reason="the 'tflite' package is not installed")

from mobilenet_v1.data.folders import find_samples
from mobilenet_v1.data.images import load_image
from mobilenet_v1.data.transforms import Preprocessing, eval_transform, float_input
from mobilenet_v1.deploy.litert import LiteRTModel
from mobilenet_v1.measure.fidelity import compare
from mobilenet_v1.weights.google_tflite.convert import load_tflite

MODELS = {
    "0.25_128": ["mobilenet_v1_0.25_128_quant.tflite"],
    "0.5_160": ["mobilenet_v1_0.5_160_quant.tflite"],
    "0.75_192": ["mobilenet_v1_0.75_192_quant.tflite"],
    "1.0_224": [
        "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
        "mobilenet_v1_1.0_224_quant_head_layers.tflite",
    ],
}
SUBSET_STEP = 79  # every 79th of the 3,925 val images: 50 images over all ten classes


def _paths(shared_data: Path, key: str) -> list[Path]:
    return [shared_data / "pretrained" / f for f in MODELS[key]]


@pytest.mark.parametrize("key", sorted(MODELS))
def test_shared_photos_match_litert(shared_data: Path, key: str) -> None:
    paths = _paths(shared_data, key)
    model, info = load_tflite(paths)
    preset = Preprocessing(info["resolution"])
    photos = sorted((shared_data / "images").iterdir())
    batch = torch.stack([eval_transform(preset, to_float=False)(load_image(p)) for p in photos])
    reference = LiteRTModel(paths).scores(batch)
    with torch.no_grad():
        ours = torch.softmax(model(float_input(batch, preset)), dim=1)
    top1 = ours[:, 1:].argmax(dim=1) + 1
    # LiteRT's uint8 scores can tie at the top: ours must pick one of its best classes
    best = reference[:, 1:].max(dim=1).values
    assert (reference[torch.arange(len(batch)), top1] == best).all()
    assert (ours - reference).abs().max() < 0.15  # probabilities, LiteRT's step is 1/256


@pytest.mark.parametrize("key", sorted(MODELS))
def test_imagenette_subset_agrees_with_litert(shared_data: Path, key: str) -> None:
    pretrained = shared_data / "pretrained"
    labels = (pretrained / "imagenet_labels.txt").read_text().splitlines()
    wnids = (pretrained / "imagenet_wnids.txt").read_text().split()
    samples, folders = find_samples(shared_data / "imagenette" / "val", labels, wnids)
    subset = samples[::SUBSET_STEP]
    assert len({t for _, t in subset}) == 10
    result = compare(_paths(shared_data, key), subset, folders)
    assert result["litert"]["count"] == len(subset) and result["litert"]["agreement"] == 100.0
    assert result["float"]["agreement_ties"] >= 90.0
    assert result["int8-exact"]["agreement"] == 100.0  # integer emulation: LiteRT's own bytes (test_int8.py)
    assert abs(result["float"]["top1"] - result["litert"]["top1"]) <= 6.0


def test_litert_rejects_wrong_input(shared_data: Path) -> None:
    runner = LiteRTModel(_paths(shared_data, "0.25_128"))
    with pytest.raises(ValueError, match=r"a float batch for a uint8 model needs the file's preprocessing"):
        runner(torch.zeros(1, 3, 128, 128))  # Google's files carry no preset to undo
    with pytest.raises(ValueError, match=r"expected a batch \(N, 3, 128, 128\), got \(1, 3, 96, 96\)"):
        runner(torch.zeros(1, 3, 96, 96, dtype=torch.uint8))
    with pytest.raises(FileNotFoundError, match=r"missing\.tflite"):
        LiteRTModel(shared_data / "missing.tflite")
