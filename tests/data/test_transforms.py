import re

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet_v1.data.images import load_image
from mobilenet_v1.data.transforms import Preprocessing, eval_transform, float_input, train_transform


@pytest.mark.parametrize(
    "mode, make",
    [
        ("L", lambda: Image.fromarray(np.full((20, 30), 200, np.uint8))),
        ("CMYK", lambda: Image.new("CMYK", (30, 20), (0, 255, 0, 0))),
        ("RGBA", lambda: Image.new("RGBA", (30, 20), (10, 20, 30, 0))),
        ("P", lambda: Image.new("RGB", (30, 20), (10, 20, 30)).convert("P")),
        ("I;16", lambda: Image.fromarray(np.full((20, 30), 65535, np.uint16))),
    ],
)
@pytest.mark.parametrize("ext", [".png", ".bmp", ".tiff", ".jpg"])
def test_modes_become_rgb_uint8(tmp_path, mode, make, ext):
    image = make()
    path = tmp_path / f"img{ext}"
    try:
        image.save(path)
    except OSError:
        pytest.skip(f"PIL cannot write mode {mode} as {ext}")
    out = load_image(path)
    assert out.dtype == torch.uint8 and out.shape == (3, 20, 30)
    if mode == "L":
        assert abs(int(out[0, 0, 0]) - 200) <= 1 and bool((out[0] == out[1]).all())
    if mode == "I;16" and ext == ".png":
        assert int(out.max()) == 255


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("missing.jpg")):
        load_image(tmp_path / "missing.jpg")
    for name, data in [("zero.jpg", b""), ("text.png", b"hello"), ("trunc.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=re.escape(name)):
            load_image(tmp_path / name)


def test_eval_transform_range_and_size():
    preset = Preprocessing(resolution=128)
    assert preset.resize == 146
    image = torch.randint(0, 256, (3, 300, 200), dtype=torch.uint8)
    x = eval_transform(preset)(image)
    u = eval_transform(preset, to_float=False)(image)
    assert x.shape == (3, 128, 128) and u.dtype == torch.uint8
    assert torch.allclose(x, u.float() / 127.5 - 1, atol=1e-6)  # Google's x / 127.5 - 1
    assert Preprocessing.from_dict(preset.to_dict()) == preset


def test_train_transform():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)
    for strong in (False, True):
        x = train_transform(Preprocessing(resolution=48), strong=strong)(image)
        assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and x.min() >= -1 - 1e-6


def test_bad_preset():
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing(resolution=128, interpolation="lanczos9")
    with pytest.raises(ValueError, match="crop_fraction"):
        Preprocessing(resolution=128, crop_fraction=0)


@pytest.mark.parametrize("strong", [False, True])
def test_uint8_training_batches_normalize_to_the_float_transform(strong):
    preset = Preprocessing(24)
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    outputs = []
    for to_float in (True, False):
        torch.manual_seed(3)
        outputs.append(train_transform(preset, strong=strong, to_float=to_float)(image))
    as_float, as_uint8 = outputs
    assert as_uint8.dtype == torch.uint8 and as_float.dtype == torch.float32
    batch = torch.stack([as_uint8, as_uint8]).contiguous(memory_format=torch.channels_last)
    normalized = float_input(batch, preset)
    assert normalized.is_contiguous(memory_format=torch.channels_last)
    if strong:  # random erasing fills with the mean colour: 0 in float, 128 in uint8
        assert torch.allclose(normalized[0], as_float, atol=1 / 127.5 + 1e-6)
    else:
        torch.testing.assert_close(normalized[0], as_float, atol=1e-6, rtol=0)
