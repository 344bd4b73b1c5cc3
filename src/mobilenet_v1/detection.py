"""MobileNet V1 as the backbone of torchvision's detectors (paper Section 4.6).

Section 4.6 of the paper trains MobileNet as the base network of SSD (300x300 input) and
Faster-RCNN (600x600 and 1024x1024) on COCO and compares them with VGG and Inception V2
(Table 13): comparable mAP at a fraction of the cost. :func:`mobilenet_v1_backbone` gives
the network in the form torchvision's detectors take (``FasterRCNN``, ``RetinaNet``,
``SSD`` with its own head or ``SSDLiteHead``): the feature maps of chosen levels of
``model.feature_info``, with or without a feature pyramid, some of the first blocks
frozen, and the normalisation the weights expect (``image_mean``/``image_std``: Google's
checkpoints take ``[-1, 1]``, not torchvision's ImageNet mean and std).
:func:`anchor_generator` and :func:`default_box_generator` build anchors with one entry
per output map of a backbone, whatever the number of levels.

Built on torchvision's ``backbone_utils.mobilenet_backbone`` and ``BackboneWithFPN``;
the levels come from the model's ``feature_info`` (the last block at each output stride)
instead of torchvision's ``_is_cn`` markers.

May import: ``builders``, ``model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

from .builders import mobilenet_v1
from .model import MobileNetV1

__all__ = [
    "FeatureMaps",
    "anchor_generator",
    "default_box_generator",
    "freeze_batch_norm",
    "mobilenet_v1_backbone",
]

# The shape of the dummy input that counts a backbone's output maps (any size whose
# stride-32 map is at least 2x2 gives the same count).
_PROBE_SIZE = (128, 128)


class FeatureMaps(nn.Module):
    """The raw feature maps of some levels of ``model.features``, as an ``OrderedDict``
    ``{"0": highest resolution, "1": ..., ...}`` (one level: still a dict).

    ``out_channels`` is the per-map list (what ``SSD`` reads), or an ``int`` for one map
    (what ``FasterRCNN`` reads).
    """

    def __init__(self, features: nn.Sequential, return_layers: dict[str, str], channels: list[int]) -> None:
        super().__init__()
        self.body = IntermediateLayerGetter(features, return_layers=return_layers)
        self.out_channels: int | list[int] = channels[0] if len(channels) == 1 else list(channels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.body(x)


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by a ``FrozenBatchNorm2d`` with the
    same affine parameters, running statistics and epsilon, in place; returns ``module``.

    For detection's small batches (torchvision's detection backbones freeze BN by
    default); a model with BN folded into its convolutions (Google's) has none to replace.
    """
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            like = next(iter([*child.parameters(), *child.buffers()]), None)
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            if like is not None:
                frozen = frozen.to(device=like.device, dtype=like.dtype)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.track_running_stats and child.running_mean is not None:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def _load(weights: Any, alpha: float | None) -> MobileNetV1:
    model = mobilenet_v1(weights=weights, alpha=1.0 if weights is None and alpha is None else alpha)
    if not isinstance(model, MobileNetV1):  # pragma: no cover - the builder's contract
        raise TypeError(f"expected a MobileNetV1, got {type(model).__name__}")
    return model


def _levels(feature_info: list[dict[str, Any]], returned_layers: Sequence[int] | None) -> list[dict[str, Any]]:
    n = len(feature_info)
    if returned_layers is None:
        return feature_info[-2:]  # strides 16 and 32, as torchvision's mobilenet backbones
    if isinstance(returned_layers, int) or not returned_layers:
        raise ValueError(f"returned_layers must be a non-empty list of feature_info indices, got {returned_layers!r}")
    picked = set()
    for k in returned_layers:
        if isinstance(k, bool) or not isinstance(k, int) or not -n <= k < n:
            strides = ", ".join(f"{i}: stride {info['reduction']}" for i, info in enumerate(feature_info))
            raise ValueError(f"unknown returned layer {k!r}: feature_info has {n} levels ({strides})")
        if k % n in picked:
            raise ValueError(f"returned layer {k!r} given twice in {list(returned_layers)!r}")
        picked.add(k % n)
    return [feature_info[k] for k in sorted(picked)]


def mobilenet_v1_backbone(
    *,
    weights: Any = None,
    alpha: float | None = None,
    fpn: bool = True,
    trainable_layers: int = 3,
    returned_layers: Sequence[int] | None = None,
    frozen_bn: bool = False,
    out_channels: int = 256,
    extra_blocks: ExtraFPNBlock | None = None,
) -> nn.Module:
    """MobileNet V1 as a detection backbone (Section 4.6: SSD and Faster-RCNN on COCO, Table 13).

    ``weights``: anything :func:`mobilenet_v1` takes (Google's model name, a registry
    member, a ``.tflite``/``.safetensors`` path); without weights, a fresh Table-1 network
    of width ``alpha`` (default 1.0). The module is in training mode.

    ``returned_layers`` index ``model.feature_info`` (negative indices count from the
    last level, stride 32); default: the last two levels, strides 16 and 32, as
    torchvision's MobileNet backbones (TensorFlow's SSD MobileNet V1 starts from the same
    blocks, 11 and 13). The maps come out as an ``OrderedDict`` ``{"0": ..., "1": ...}``,
    highest resolution first.

    ``fpn=True``: torchvision's ``BackboneWithFPN`` over those levels, ``out_channels``
    wide, with ``extra_blocks`` after them (``LastLevelMaxPool()`` by default, as
    ``"pool"``; pass ``LastLevelP6P7(c, c)`` for RetinaNet). ``fpn=False``: the raw maps
    (a :class:`FeatureMaps`; one level is still a dict), and ``out_channels`` is ignored.
    The backbone's ``out_channels`` is what the detectors read: the FPN's width, the width
    of a single raw map, or the list of the raw maps' widths. So ``FasterRCNN`` and
    ``RetinaNet`` take the FPN or one raw level (e.g. ``returned_layers=[-1]``), ``SSD``
    and ``SSDLiteHead`` take several raw levels.

    ``trainable_layers``: how many of the last modules of ``model.features`` (13 blocks
    after the stem in the standard network) keep ``requires_grad``; the rest are frozen
    (0: none trainable, ``len(model.features)``: all). Frozen layers still update BN
    running statistics in training mode; ``frozen_bn=True`` replaces every BN by
    ``FrozenBatchNorm2d`` with the same statistics (for small detection batches; nothing
    to do for Google's folded models). It is meant for trained weights: the statistics of a
    fresh network are the identity, which no longer normalises anything.

    The module carries ``image_mean``/``image_std`` (lists, from the weights'
    preprocessing: 0.5 and 0.5, i.e. ``[-1, 1]``, for Google's weights and for models
    trained with this project): pass them to the detector, whose defaults are ImageNet's.
    ``feature_info`` lists the levels it returns.
    """
    for name, flag in (("fpn", fpn), ("frozen_bn", frozen_bn)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int):
        raise ValueError(f"trainable_layers must be an integer, got {trainable_layers!r}")
    if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
        raise ValueError(f"out_channels must be an integer >= 1, got {out_channels!r}")
    if extra_blocks is not None and not fpn:
        raise ValueError(f"extra_blocks={extra_blocks!r} needs fpn=True")
    model = _load(weights, alpha)
    features = model.features
    num_layers = len(features)
    if not 0 <= trainable_layers <= num_layers:
        raise ValueError(
            f"trainable_layers must be in [0, {num_layers}] (the modules of model.features), got {trainable_layers!r}"
        )
    levels = _levels(model.feature_info, returned_layers)

    for layer in features[: num_layers - trainable_layers]:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)
    if frozen_bn:
        freeze_batch_norm(features)

    return_layers: dict[str, str] = {}
    for position, info in enumerate(levels):
        if info["module"] != f"features.{info['index']}":
            raise ValueError(f"feature_info entry {info!r} does not name a module of model.features")
        return_layers[str(info["index"])] = str(position)
    channels = [info["num_chs"] for info in levels]

    backbone: nn.Module
    if fpn:
        backbone = BackboneWithFPN(
            features, return_layers, channels, out_channels, extra_blocks=extra_blocks or LastLevelMaxPool()
        )
    else:
        backbone = FeatureMaps(features, return_layers, channels)
    # the weights' preprocessing (the builder's timm-style pretrained_cfg)
    backbone.image_mean = [float(m) for m in model.pretrained_cfg["mean"]]
    backbone.image_std = [float(s) for s in model.pretrained_cfg["std"]]
    backbone.feature_info = [dict(info) for info in levels]
    return backbone


def _num_feature_maps(backbone: nn.Module) -> int:
    """How many maps ``backbone`` returns: one forward of a dummy image in eval mode."""
    was_training = backbone.training
    parameter = next(backbone.parameters())
    try:
        backbone.eval()
        with torch.no_grad():
            out = backbone(torch.zeros(1, 3, *_PROBE_SIZE, device=parameter.device, dtype=parameter.dtype))
    finally:
        backbone.train(was_training)
    return 1 if isinstance(out, torch.Tensor) else len(out)


def _per_level(name: str, value: Sequence[Any], levels: int, element: type) -> tuple[tuple[Any, ...], ...]:
    """``value`` for every level: one tuple repeated, or already one tuple per level."""
    if value and all(isinstance(v, element) and not isinstance(v, bool) for v in value):
        return (tuple(value),) * levels
    if len(value) != levels or not all(isinstance(v, Sequence) and v for v in value):
        raise ValueError(
            f"{name} must be one tuple for every level or one tuple per level ({levels} levels), got {value!r}"
        )
    return tuple(tuple(v) for v in value)


def anchor_generator(
    backbone: nn.Module,
    sizes: Sequence[int] | Sequence[Sequence[int]] = (32, 64, 128, 256, 512),
    aspect_ratios: Sequence[float] | Sequence[Sequence[float]] = (0.5, 1.0, 2.0),
) -> AnchorGenerator:
    """An ``AnchorGenerator`` for ``FasterRCNN``/``RetinaNet`` with one entry per map that
    ``backbone`` outputs (counted with one dummy forward): ``sizes`` and ``aspect_ratios``
    are used at every level, or given per level (their count must match).

    The default, every size at every level, is torchvision's for its MobileNet Faster R-CNN.
    """
    levels = _num_feature_maps(backbone)
    return AnchorGenerator(
        _per_level("sizes", sizes, levels, int), _per_level("aspect_ratios", aspect_ratios, levels, (int, float))
    )


def default_box_generator(
    backbone: nn.Module,
    aspect_ratios: Sequence[int] | Sequence[Sequence[int]] = (2, 3),
    *,
    min_ratio: float = 0.2,
    max_ratio: float = 0.95,
) -> DefaultBoxGenerator:
    """SSD's ``DefaultBoxGenerator`` with one entry per map that ``backbone`` outputs
    (counted with one dummy forward). Defaults: torchvision's SSDlite."""
    levels = _num_feature_maps(backbone)
    ratios = _per_level("aspect_ratios", aspect_ratios, levels, (int, float))
    return DefaultBoxGenerator([list(r) for r in ratios], min_ratio=min_ratio, max_ratio=max_ratio)
