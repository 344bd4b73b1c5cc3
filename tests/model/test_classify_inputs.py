"""``Classifier.predict`` on whatever image a user holds: paths, one path, PIL images, uint8
and float tensors, arrays, batches; bad images and a bad ``k`` refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet_v1 import Classifier
from mobilenet_v1.data.images import load_image

SMALL = "mobilenet_v1_0.25_128_quant"


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int) -> bool:
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.fixture(scope="module")
def classifier(shared_data):
    return Classifier.from_weights(SMALL)


def test_predict_takes_paths_pil_images_tensors_and_arrays(classifier, shared_data):
    path = shared_data / "images" / "cat.bmp"
    expected = classifier.predict([path], k=3)
    pixels = load_image(path)
    pil = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    same = [
        classifier.predict(path, k=3),  # one path, not a list of characters
        classifier.predict(str(path), k=3),
        classifier.predict(pil, k=3),
        classifier.predict(pixels, k=3),
        classifier.predict(pixels.float() / 255, k=3),
        classifier.predict(pixels.permute(1, 2, 0).numpy(), k=3),
    ]
    for got in same:
        assert [label for label, _ in got[0]] == [label for label, _ in expected[0]]
        np.testing.assert_allclose([p for _, p in got[0]], [p for _, p in expected[0]], atol=1e-5)
    batch = classifier.predict(torch.stack([pixels, pixels.flip(-1)]), k=1)
    assert len(batch) == 2 and batch[0][0][0] == expected[0][0][0]
    gray = classifier.predict(Image.fromarray(pixels[0].numpy(), mode="L"), k=1)
    assert len(gray) == 1


@pytest.mark.parametrize(
    "bad, needle",
    [
        ([], "images is empty"),
        (torch.zeros(3, 40, 40, dtype=torch.int32), "uint8 or floating-point"),
        (torch.full((3, 40, 40), 2.0), r"in \[0, 1\]"),
        (torch.zeros(4, 40, 40), r"shape \(3, H, W\)"),
        (42, "got int"),
    ],
)
def test_predict_refuses_bad_images_in_one_line(classifier, bad, needle):
    with pytest.raises(ValueError, match=needle):
        classifier.predict(bad)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_predict_refuses_a_bad_k(classifier, shared_data, k):
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        classifier.predict(shared_data / "images" / "cat.bmp", k=k)
