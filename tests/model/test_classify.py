"""``Classifier``: preprocessing, softmax, top-k, the outputs never predicted (Google's
"background"), and bad images refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_CLASSES
from PIL import Image

from mobilenet_v1 import Classifier
from mobilenet_v1.data.images import load_image
from mobilenet_v1.weights import load_safetensors

# --------------------------------------------------------------------------------------
# Classifier


def _write_images(folder: Path) -> list[Path]:
    gen = torch.Generator().manual_seed(5)
    paths = []
    for i, (size, suffix) in enumerate(
        [((80, 60), ".jpg"), ((50, 90), ".png"), ((64, 64), ".jpg"), ((70, 71), ".png")]
    ):
        pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=gen).numpy()
        path = folder / f"img{i}{suffix}"
        Image.fromarray(pixels, "RGB").save(path)
        paths.append(path)
    return paths


def test_classifier_predict_matches_softmax(tiny, tmp_path):
    path, _ = tiny
    images = _write_images(tmp_path)
    clf = Classifier.from_weights(path)
    assert clf.classes == TINY_CLASSES and clf.ignore == ()
    preds = clf.predict(images, k=2)
    assert len(preds) == len(images)
    model, _ = load_safetensors(path)
    batch = torch.stack([clf.transform(load_image(p)) for p in images])
    assert batch.shape == (len(images), 3, 64, 64) and batch.dtype == torch.float32
    with torch.no_grad():
        probs = torch.softmax(model.eval()(batch), dim=1)
    for pred, row in zip(preds, probs, strict=True):
        assert len(pred) == 2
        names = [n for n, _ in pred]
        ps = [p for _, p in pred]
        assert all(isinstance(n, str) and n in TINY_CLASSES for n in names) and len(set(names)) == 2
        assert all(0.0 <= p <= 1.0 for p in ps)
        assert ps[0] >= ps[1]
        best = row.topk(2)
        assert names == [TINY_CLASSES[i] for i in best.indices.tolist()]
        assert ps == pytest.approx(best.values.tolist(), abs=1e-6)


def test_classifier_ignore_never_predicted(tiny, tmp_path):
    path, _ = tiny
    images = _write_images(tmp_path)
    model, loaded = load_safetensors(path)
    # make class 0 the clear favourite, so ignoring it matters
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([50.0, 0.0, 0.0]))
    assert {p[0][0] for p in Classifier(model, loaded.preprocessing, TINY_CLASSES).predict(images, k=1)} == {"a"}
    clf = Classifier(model, loaded.preprocessing, TINY_CLASSES, ignore=(0,))
    for pred in clf.predict(images, k=2):
        assert [n for n, _ in pred] and "a" not in [n for n, _ in pred], pred
        assert all(0.0 <= p <= 1.0 for _, p in pred), pred


def test_classifier_ignore_never_predicted_when_k_covers_all_classes(tiny, tmp_path):
    path, _ = tiny
    images = _write_images(tmp_path)[:1]
    model, loaded = load_safetensors(path)
    clf = Classifier(model, loaded.preprocessing, TINY_CLASSES, ignore=(0,))
    (pred,) = clf.predict(images, k=3)
    assert "a" not in [n for n, _ in pred], pred
    assert all(0.0 <= p <= 1.0 for _, p in pred), pred


def test_classifier_missing_image_fails_before_any_work(tiny, tmp_path):
    path, _ = tiny
    images = _write_images(tmp_path)
    model, loaded = load_safetensors(path)
    calls = []

    def counting(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape)
        return model(batch)

    clf = Classifier(counting, loaded.preprocessing, TINY_CLASSES)
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg"):
        clf.predict([images[0], missing, images[1]], k=2)
    assert calls == []
    clf.predict(images[:1], k=2)
    assert len(calls) == 1  # the counter works


def test_classifier_google_weights_never_predict_background(shared_data, monkeypatch):
    tflite = shared_data / "pretrained" / "mobilenet_v1_0.25_128_quant.tflite"
    folder = shared_data / "images"
    if not tflite.is_file() or not folder.is_dir():
        pytest.skip("shared data has no mobilenet_v1_0.25_128_quant.tflite or images/")
    monkeypatch.setenv("MOBILENET_V1_DATA", str(shared_data))
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    assert images
    clf = Classifier.from_weights("mobilenet_v1_0.25_128_quant")
    assert len(clf.classes) == 1001 and clf.classes[0] == "background" and clf.ignore == (0,)
    preds = clf.predict(images, k=5)
    assert len(preds) == len(images)
    for image, pred in zip(images, preds, strict=True):
        names = [n for n, _ in pred]
        assert len(names) == 5 and "background" not in names, (image.name, pred)
        assert all(0.0 <= p <= 1.0 for _, p in pred), (image.name, pred)
        assert [p for _, p in pred] == sorted((p for _, p in pred), reverse=True)
    # with k = all but one output, background (ignored) must still be the one left out
    (wide,) = clf.predict(images[:1], k=1000)
    assert "background" not in [n for n, _ in wide]
