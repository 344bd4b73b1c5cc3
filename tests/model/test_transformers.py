"""Cross-check against HuggingFace transformers' MobileNetV1ForImageClassification.

Google's 1.0/224 weights (Table 1 with ReLU6, TensorFlow SAME padding and batch norm
folded into each convolution, Section 3.1) are mapped into transformers' implementation,
which keeps its batch norm layers: each one is set to the identity plus our folded bias.
The two independent implementations must then give the same logits.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

import transformers

from mobilenet_v1.data.images import load_image
from mobilenet_v1.data.transforms import Preprocessing, eval_transform
from mobilenet_v1.model import MobileNetV1
from mobilenet_v1.weights import google_config, load_weights

GOOGLE = "mobilenet_v1_1.0_224_quant"
PHOTOS = ("cat.bmp", "grace_hopper.bmp", "owl.jpg", "parrot.jpg")
BN_EPS = 1e-3  # TF-slim's batch norm epsilon, also transformers' default layer_norm_eps


def hf_config(alpha: float, num_classes: int = 1001):
    return transformers.MobileNetV1Config(
        num_labels=num_classes,
        depth_multiplier=alpha,
        image_size=224,
        tf_padding=True,
        hidden_act="relu6",
        layer_norm_eps=BN_EPS,
        min_depth=8,
    )


def to_transformers(ours: MobileNetV1):
    """transformers' model holding our folded weights: conv weight as is, batch norm as
    the identity (weight 1, mean 0, var 1 - eps) plus our conv bias as its shift."""
    theirs = transformers.MobileNetV1ForImageClassification(hf_config(ours.config.alpha, ours.num_classes)).eval()
    convs = [m for m in ours.features.modules() if isinstance(m, nn.Conv2d)]  # stem, then dw/pw of each block
    layers = [theirs.mobilenet_v1.conv_stem, *theirs.mobilenet_v1.layer]
    assert len(convs) == len(layers) == 27
    with torch.no_grad():
        for conv, layer in zip(convs, layers, strict=True):
            assert layer.convolution.weight.shape == conv.weight.shape and layer.convolution.stride == conv.stride
            layer.convolution.weight.copy_(conv.weight)
            bn = layer.normalization
            bn.weight.fill_(1.0)
            bn.bias.copy_(conv.bias)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        theirs.classifier.weight.copy_(ours.classifier.weight)
        theirs.classifier.bias.copy_(ours.classifier.bias)
    return theirs


@pytest.fixture(scope="module")
def pair(shared_data):
    ours, info = load_weights(GOOGLE)
    ours.eval()
    return ours, to_transformers(ours), info


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


def test_logits_match_transformers_on_random_inputs(pair):
    ours, theirs, _ = pair
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1  # Google's [-1, 1] range
    a, b = _logits(ours, x), _logits(theirs, x)
    assert a.shape == b.shape == (2, 1001)
    assert (a - b).abs().max() < 1e-4, float((a - b).abs().max())
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_top1_matches_transformers_on_photos_and_at_an_odd_size(pair, shared_data):
    ours, theirs, info = pair
    transform = eval_transform(info.preprocessing)
    photos = torch.stack([transform(load_image(shared_data / "images" / name)) for name in PHOTOS])
    a, b = _logits(ours, photos), _logits(theirs, photos)
    assert (a - b).abs().max() < 1e-4 and torch.equal(a.argmax(1), b.argmax(1))
    assert info.classes[int(a[0].argmax())] in ("tabby, tabby cat", "tiger cat", "Egyptian cat")  # cat.bmp
    # 193x201: odd sizes, where SAME padding is asymmetric at every stride-2 layer (Section 3.4's rho)
    odd = torch.nn.functional.interpolate(photos, size=(193, 201), mode="bilinear", antialias=True)
    a, b = _logits(ours, odd), _logits(theirs, odd)
    assert (a - b).abs().max() < 1e-4 and torch.equal(a.argmax(1), b.argmax(1))


@pytest.mark.parametrize("alpha", [1.0, 0.75, 0.5, 0.25])
def test_parameter_counts_match_transformers(alpha):
    """With batch norm kept (TF-slim's training form), ours and transformers' have the same
    parameters: conv weights, BN scale and shift, classifier. Folding BN (Google's released
    form) drops one scale per channel: the shift becomes the conv bias."""
    with torch.device("meta"):
        theirs = transformers.MobileNetV1ForImageClassification(hf_config(alpha))
        with_bn = MobileNetV1(replace(google_config(alpha), folded_bn=False))
        folded = MobileNetV1(google_config(alpha))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    scales = sum(m.num_features for m in theirs.modules() if isinstance(m, nn.BatchNorm2d))
    assert count(with_bn) == count(theirs)
    assert count(folded) == count(theirs) - scales
    assert [p.shape for p in with_bn.parameters()] == [p.shape for p in theirs.parameters()]


def test_image_processor_matches_our_eval_preset(shared_data):
    """transformers' MobileNetV1ImageProcessor built offline with Google's preset (shorter
    side 256, 224 centre crop, bilinear, [-1, 1]) against our eval transform."""
    from transformers.image_utils import PILImageResampling

    processor = transformers.MobileNetV1ImageProcessor(
        do_resize=True,
        size={"shortest_edge": 256},
        resample=PILImageResampling.BILINEAR,
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    preset = Preprocessing(224)
    assert preset.resize == 256
    image = load_image(shared_data / "images" / "grace_hopper.bmp")
    theirs = processor(images=image, return_tensors="pt")["pixel_values"][0]
    ours = eval_transform(preset)(image)
    assert theirs.shape == ours.shape == (3, 224, 224)
    diff = (theirs - ours).abs()
    # both resize with torchvision's antialiased bilinear; ours rounds the resized image to uint8 first
    assert diff.max() < 2 / 127.5 and diff.mean() < 0.5 / 127.5, (float(diff.max()), float(diff.mean()))
