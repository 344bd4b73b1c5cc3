"""MobileNet V1 as the backbone of torchvision's detectors (paper Section 4.6: SSD and
Faster-RCNN on COCO, Table 13), on dummy data: one training step and inference for
Faster R-CNN (with and without FPN), RetinaNet, SSD and SSDlite; frozen layers and frozen
BN; the normalisation and features of Google's weights; argument checks."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import randomize_batch_norm
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.detection import (
    FeatureMaps,
    anchor_generator,
    default_box_generator,
    mobilenet_v1_backbone,
)
from mobilenet_v1.weights import save_safetensors

NUM_CLASSES = 3  # background + 2
GOOGLE = "mobilenet_v1_0.25_128_quant"


def _images_and_targets() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 128, 160, generator=gen) for _ in range(2)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 70.0, 100.0], [80.0, 30.0, 150.0, 120.0]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.tensor([[5.0, 5.0, 60.0, 50.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


def _norm(backbone: nn.Module) -> dict:
    """The normalisation the backbone's weights expect (the detectors default to ImageNet's)."""
    return {"image_mean": backbone.image_mean, "image_std": backbone.image_std}


def _small(backbone: nn.Module) -> dict:
    """Faster R-CNN's and RetinaNet's transform: small images, the backbone's normalisation."""
    return {"min_size": 128, "max_size": 160, **_norm(backbone)}


def faster_rcnn_fpn() -> tuple[nn.Module, nn.Module]:
    backbone = mobilenet_v1_backbone(alpha=0.25)
    model = FasterRCNN(backbone, NUM_CLASSES, rpn_anchor_generator=anchor_generator(backbone), **_small(backbone))
    return model, backbone


def faster_rcnn_c5() -> tuple[nn.Module, nn.Module]:
    backbone = mobilenet_v1_backbone(alpha=0.25, fpn=False, returned_layers=[-1])
    model = FasterRCNN(backbone, NUM_CLASSES, rpn_anchor_generator=anchor_generator(backbone), **_small(backbone))
    return model, backbone


def retinanet() -> tuple[nn.Module, nn.Module]:
    backbone = mobilenet_v1_backbone(alpha=0.25, out_channels=64, extra_blocks=LastLevelP6P7(64, 64))
    model = RetinaNet(backbone, NUM_CLASSES, anchor_generator=anchor_generator(backbone), **_small(backbone))
    return model, backbone


def ssd() -> tuple[nn.Module, nn.Module]:
    backbone = mobilenet_v1_backbone(alpha=0.25, fpn=False)  # strides 16 and 32, as the paper's SSD
    model = SSD(backbone, default_box_generator(backbone), (128, 128), NUM_CLASSES, **_norm(backbone))
    return model, backbone


def ssdlite() -> tuple[nn.Module, nn.Module]:
    backbone = mobilenet_v1_backbone(alpha=0.25, fpn=False)
    boxes = default_box_generator(backbone)
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    head = SSDLiteHead(list(backbone.out_channels), boxes.num_anchors_per_location(), NUM_CLASSES, norm)
    model = SSD(backbone, boxes, (128, 128), NUM_CLASSES, head=head, **_norm(backbone))
    return model, backbone


DETECTORS = {
    "faster_rcnn_fpn": faster_rcnn_fpn,
    "faster_rcnn_c5": faster_rcnn_c5,
    "retinanet": retinanet,
    "ssd": ssd,
    "ssdlite": ssdlite,
}


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_trains_one_step_then_detects(name):
    torch.manual_seed(0)
    model, backbone = DETECTORS[name]()
    assert model.transform.image_mean == [0.5, 0.5, 0.5] and model.transform.image_std == [0.5, 0.5, 0.5]
    # trainable_layers=3: the last three modules of model.features train, the rest are frozen
    body = backbone.body
    last = str(backbone.feature_info[-1]["index"])
    frozen = body["1"].pw.conv.weight
    trainable = body[last].pw.conv.weight
    assert not frozen.requires_grad and trainable.requires_grad
    assert [k for k, m in body.named_children() if any(p.requires_grad for p in m.parameters())] == ["11", "12", "13"]
    before = {"frozen": frozen.detach().clone(), "trainable": trainable.detach().clone()}

    images, targets = _images_and_targets()
    model.train()
    losses = model(images, targets)
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    assert frozen.grad is None and trainable.grad is not None
    optimizer.step()
    assert torch.equal(frozen, before["frozen"])
    assert not torch.equal(trainable, before["trainable"])

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == len(images)
    for out in detections:
        assert set(out) == {"boxes", "scores", "labels"}
        n = out["boxes"].shape[0]
        assert out["boxes"].shape == (n, 4) and out["scores"].shape == (n,) and out["labels"].shape == (n,)
        assert torch.isfinite(out["boxes"]).all()


def test_backbone_outputs_and_out_channels():
    x = torch.rand(1, 3, 128, 160)
    fpn = mobilenet_v1_backbone(alpha=0.25).eval()
    info = mobilenet_v1(alpha=0.25).feature_info
    assert [i["reduction"] for i in fpn.feature_info] == [16, 32]  # default: the last two levels
    with torch.no_grad():
        out = fpn(x)
    assert list(out) == ["0", "1", "pool"] and all(v.shape[1] == 256 for v in out.values())
    assert fpn.out_channels == 256 and isinstance(fpn.out_channels, int)
    assert len(anchor_generator(fpn).sizes) == 3 and fpn.training is False  # the probe keeps the mode

    raw = mobilenet_v1_backbone(alpha=0.25, fpn=False, returned_layers=list(range(len(info))))
    assert isinstance(raw, FeatureMaps) and raw.training
    with torch.no_grad():
        out = raw(x)
    assert raw.training  # anchor_generator's probe restores training mode
    assert len(anchor_generator(raw).sizes) == len(info) and raw.training
    assert list(out) == [str(i) for i in range(len(info))]
    for entry, tensor in zip(info, out.values(), strict=True):
        r = entry["reduction"]
        assert tensor.shape == (1, entry["num_chs"], -(-128 // r), -(-160 // r)), entry
    assert raw.out_channels == [e["num_chs"] for e in info]

    one = mobilenet_v1_backbone(alpha=0.25, fpn=False, returned_layers=[-1])
    with torch.no_grad():
        out = one(x)
    assert isinstance(out, dict) and list(out) == ["0"] and out["0"].shape == (1, info[-1]["num_chs"], 4, 5)
    assert type(one.out_channels) is int and one.out_channels == info[-1]["num_chs"]  # what FasterRCNN reads

    # per-level anchor sizes must match the number of maps
    sizes = anchor_generator(fpn, sizes=((32,), (64,), (128,))).sizes
    assert sizes == ((32,), (64,), (128,))
    with pytest.raises(ValueError, match="3 levels"):
        anchor_generator(fpn, sizes=((32,), (64,)))


def _checkpoint(path, **kwargs):
    """A checkpoint with non-trivial BN statistics and its own preprocessing."""
    torch.manual_seed(1)
    model = randomize_batch_norm(mobilenet_v1(alpha=0.25, num_classes=3, **kwargs))
    imagenet = Preprocessing(64, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    save_safetensors(model, path, {"resolution": 64, "classes": ["a", "b", "c"], "preprocessing": imagenet.to_dict()})
    return path, model.eval(), imagenet


def test_frozen_bn_keeps_outputs(tmp_path):
    path, model, preprocessing = _checkpoint(tmp_path / "bn.safetensors")
    levels = list(range(len(model.feature_info)))
    plain = mobilenet_v1_backbone(weights=path, fpn=False, returned_layers=levels)
    frozen = mobilenet_v1_backbone(weights=path, fpn=False, returned_layers=levels, frozen_bn=True)
    # the weights' own normalisation, not a fixed one
    assert frozen.image_mean == list(preprocessing.mean) and frozen.image_std == list(preprocessing.std)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules()) == n_bn > 0
    x = torch.randn(2, 3, 96, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model.forward_intermediates(x, intermediates_only=True)
        got_plain = plain.eval()(x)
        got_frozen = frozen.train()(x)  # frozen BN: the same in training mode, statistics unchanged
    for want, a, b in zip(expected, got_plain.values(), got_frozen.values(), strict=True):
        torch.testing.assert_close(a, want, rtol=0, atol=1e-5)
        torch.testing.assert_close(b, want, rtol=1e-5, atol=1e-5)


def test_shallow_checkpoint_counts_its_own_blocks(tmp_path):
    path, model, _ = _checkpoint(tmp_path / "shallow.safetensors", variant="shallow")
    n = len(model.features)
    assert n < 14
    backbone = mobilenet_v1_backbone(weights=path, trainable_layers=n)
    assert all(p.requires_grad for p in backbone.body.parameters())
    backbone = mobilenet_v1_backbone(weights=path, trainable_layers=0, fpn=False)
    assert not any(p.requires_grad for p in backbone.parameters())
    with pytest.raises(ValueError, match=f"\\[0, {n}\\].*got {n + 1}"):
        mobilenet_v1_backbone(weights=path, trainable_layers=n + 1)


def test_google_weights_normalisation_and_features(shared_data):
    if not (shared_data / "pretrained" / f"{GOOGLE}.tflite").is_file():
        pytest.skip(f"shared data has no pretrained/{GOOGLE}.tflite")
    classifier = mobilenet_v1(weights=GOOGLE).eval()
    levels = list(range(len(classifier.feature_info)))
    backbone = mobilenet_v1_backbone(weights=GOOGLE, fpn=False, returned_layers=levels, frozen_bn=True).eval()
    assert backbone.image_mean == [0.5, 0.5, 0.5] and backbone.image_std == [0.5, 0.5, 0.5]
    assert not any(isinstance(m, nn.BatchNorm2d | FrozenBatchNorm2d) for m in backbone.modules())  # folded
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        expected = classifier.forward_intermediates(x, intermediates_only=True)
        got = backbone(x)
    assert len(got) == len(expected) == len(levels)
    for want, have in zip(expected, got.values(), strict=True):
        torch.testing.assert_close(have, want, rtol=0, atol=0)
    fpn = mobilenet_v1_backbone(weights=GOOGLE)
    assert fpn.image_mean == [0.5, 0.5, 0.5] and fpn.training
    with pytest.raises(ValueError, match="alpha"):
        mobilenet_v1_backbone(weights=GOOGLE, alpha=0.5)


def test_from_scratch_normalisation_is_the_project_preset():
    backbone = mobilenet_v1_backbone(alpha=0.25)
    assert backbone.image_mean == list(Preprocessing(224).mean) == [0.5, 0.5, 0.5]
    assert backbone.image_std == list(Preprocessing(224).std) == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"returned_layers": [9]}, "unknown returned layer 9"),
        ({"returned_layers": [-9]}, "unknown returned layer -9"),
        ({"returned_layers": ["1"]}, "unknown returned layer '1'"),
        ({"returned_layers": [1, -1, 1]}, "returned layer 1 given twice"),
        ({"returned_layers": []}, r"returned_layers .* got \[\]"),
        ({"trainable_layers": -1}, r"trainable_layers must be in \[0, 14\].* got -1"),
        ({"trainable_layers": 15}, r"trainable_layers must be in \[0, 14\].* got 15"),
        ({"trainable_layers": 2.0}, "trainable_layers must be an integer, got 2.0"),
        ({"out_channels": 0}, "out_channels must be an integer >= 1, got 0"),
        ({"fpn": False, "extra_blocks": LastLevelP6P7(8, 8)}, "needs fpn=True"),
        ({"alpha": -1.0}, "alpha"),
    ],
    ids=lambda v: "-".join(map(str, v)) if isinstance(v, dict) else None,
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mobilenet_v1_backbone(**{"alpha": 0.25, **kwargs})


def test_docs_examples_run(shared_data):
    """docs/detection.md: its code blocks, run in order, do what the tests above check."""
    if not (shared_data / "pretrained" / f"{GOOGLE}.tflite").is_file():
        pytest.skip(f"shared data has no pretrained/{GOOGLE}.tflite")
    text = (Path(__file__).resolve().parents[2] / "docs" / "detection.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 3
    torch.manual_seed(0)
    scope: dict = {}
    exec(blocks[0], scope)  # Faster R-CNN on Google's weights: one training step, then inference
    assert all(torch.isfinite(v) for v in scope["losses"].values())
    assert scope["model"].transform.image_mean == [0.5, 0.5, 0.5]
    assert len(scope["detections"]) == 2 and set(scope["detections"][0]) == {"boxes", "scores", "labels"}
    exec(blocks[1], scope)
    assert isinstance(scope["model"], RetinaNet)
    exec(blocks[2], scope)
    assert isinstance(scope["model"], SSD) and scope["model"].transform.image_std == [0.5, 0.5, 0.5]
