"""timm's registry (``mobilenet_v1.timm_registry``): every release as ``arch.tag``, Google's
weights through our loader, the weights' preset from timm's data config, layer decay groups."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mobilenet_v1 import MobileNetV1, load_weights, mobilenet_v1
from mobilenet_v1.data.transforms import eval_transform

SMALL = "mobilenet_v1_0.25_128_quant"


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int) -> bool:
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


timm = pytest.importorskip("timm", reason="timm is installed by `make` (the dev extra)")


def test_importing_the_package_registers_every_release_with_timm():
    names = timm.list_models("mobilenet_v1_*")
    assert len(names) == 16 and "mobilenet_v1_025_128" in names and "mobilenet_v1_100_224" in names
    pretrained = timm.list_pretrained("mobilenet_v1_025_128*")
    assert pretrained == ["mobilenet_v1_025_128.google_float", "mobilenet_v1_025_128.google_quant"]


def test_timm_create_model_without_weights_and_a_new_head():
    model = timm.create_model("mobilenet_v1_050_160.google_float", pretrained=False, num_classes=7)
    assert isinstance(model, MobileNetV1) and model.num_classes == 7
    assert model.pretrained_cfg["input_size"] == (3, 160, 160) and model.default_cfg is model.pretrained_cfg
    assert model(torch.randn(2, 3, 160, 160)).shape == (2, 7)
    features = timm.create_model("mobilenet_v1_025_128", features_only=True, out_indices=(3, 4))
    assert [f.shape[1] for f in features(torch.randn(1, 3, 128, 128))] == [128, 256]
    with pytest.raises(ValueError, match="unknown tag"):
        timm.create_model("mobilenet_v1_025_128.imagenet")


def test_timm_pretrained_is_googles_checkpoint_through_our_loader(shared_data):
    model = timm.create_model("mobilenet_v1_025_128.google_quant", pretrained=True)
    assert _same_outputs(model, mobilenet_v1(weights=SMALL), 128)
    assert model.pretrained_cfg["label_names"][1] == "tench, Tinca tinca"
    tuned = timm.create_model("mobilenet_v1_025_128", pretrained=True, num_classes=7)
    assert tuned.num_classes == 7 and "label_names" not in tuned.pretrained_cfg
    torch.testing.assert_close(tuned.features[3].pw.conv.weight, model.features[3].pw.conv.weight)


def test_timm_data_config_gives_the_weights_preset(shared_data):
    model = timm.create_model("mobilenet_v1_050_160.google_quant", pretrained=True)
    config = timm.data.resolve_data_config(model=model)
    timm_transform = timm.data.create_transform(**config)
    _, info = load_weights("mobilenet_v1_0.5_160_quant")
    image = Image.open(shared_data / "images" / "cat.bmp").convert("RGB")
    ours, theirs = eval_transform(info.preprocessing)(image), timm_transform(image)
    assert ours.shape == theirs.shape == (3, 160, 160)  # the same resize (183) and crop
    # PIL's resize (timm) and torchvision's tensor resize (ours) round differently: within 2 levels
    assert float((ours - theirs).abs().max()) <= 2 / 127.5 + 1e-6


def test_timm_layer_decay_groups_the_blocks():
    from timm.optim import create_optimizer_v2

    model = mobilenet_v1(alpha=0.25, num_classes=10)
    optimizer = create_optimizer_v2(model, "sgd", lr=0.1, layer_decay=0.5)
    scales = sorted({group["lr_scale"] for group in optimizer.param_groups})
    assert len(scales) == 15 and scales[-1] == 1.0  # stem, 13 blocks, classifier
