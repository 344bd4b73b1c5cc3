"""MobileNet V1 in timm's model registry, so that timm's tools reach Google's weights.

``import mobilenet_v1`` registers (when timm is installed) one architecture per released
width and resolution (Sections 3.3-3.4), in timm's ``arch.tag`` form, each with Google's
quantization-aware (``google_quant``, the default) and float (``google_float``) weights:

    timm.create_model("mobilenet_v1_025_128.google_quant", pretrained=True, num_classes=7)
    timm.data.resolve_data_config(model=model); timm.data.create_transform(**config)

An architecture is Google's (``weights.google_config``: ReLU6, TensorFlow SAME padding,
batch norm folded, 1001 outputs); ``pretrained=True`` loads the weights through the
project's own loader (:func:`~mobilenet_v1.weights.load_weights`: sha256-checked where a
hash is recorded, converted from Google's ``.tflite``), and a ``num_classes`` other than
1001 puts a new classifier on them (timm's rule). The preprocessing in each
``pretrained_cfg`` is the weights' own preset; its ``crop_pct`` is the resolution over the
preset's resize, so that timm's ``floor(size / crop_pct)`` gives the same resize. For the
paper's trainable model (batch norm, any alpha) use :func:`~mobilenet_v1.mobilenet_v1`.

May import: ``builders``, ``model``, ``weights``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timm.models import generate_default_cfgs, register_model
from torch import nn

from .builders import mobilenet_v1
from .model import MobileNetV1, MobileNetV1Features
from .weights import LoadedWeights, MobileNetV1Weights, google_config, pretrained_cfg

__all__ = ["ARCHITECTURES", "default_cfgs"]

TAGS = {"google_quant": True, "google_float": False}  # tag -> quantized; the first is the default


def _architecture(alpha: float, resolution: int) -> str:
    return f"mobilenet_v1_{round(alpha * 100):03d}_{resolution}"


def _record(alpha: float, resolution: int, quantized: bool) -> MobileNetV1Weights:
    return next(
        m
        for m in MobileNetV1Weights
        if (m.value.alpha, m.value.resolution, m.value.quantized) == (alpha, resolution, quantized)
    )


def _cfg(member: MobileNetV1Weights) -> dict[str, Any]:
    """timm's pretrained cfg of Google's checkpoint ``member`` (its preset, URL and licence)."""
    record = member.value
    cfg = pretrained_cfg(record.config, LoadedWeights([], record.preprocessing, record=record))
    del cfg["label_names"], cfg["architecture"], cfg["tag"]  # no names until loaded; timm sets the others
    return cfg | {
        "label_offset": 1,  # output 0 is "background"
        "license": record.license.lower(),
        "origin_url": "https://github.com/tensorflow/models/blob/master/research/slim/nets/mobilenet_v1.md",
        "paper_ids": "arXiv:1704.04861",
    }


CONFIGS = sorted({(m.value.alpha, m.value.resolution) for m in MobileNetV1Weights}, reverse=True)
ARCHITECTURES = tuple(_architecture(a, r) for a, r in CONFIGS)
default_cfgs = generate_default_cfgs(
    {
        f"{_architecture(a, r)}.{tag}": _cfg(_record(a, r, quantized))
        for a, r in CONFIGS
        for tag, quantized in TAGS.items()
    }
)


def _create(
    alpha: float,
    resolution: int,
    pretrained: bool = False,
    pretrained_cfg: Any = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    num_classes: int | None = None,
    drop_rate: float | None = None,
    features_only: bool = False,
    out_indices: Any = (0, 1, 2, 3, 4),
    in_chans: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """The model of one architecture for timm's ``create_model`` (its arguments: the tag in
    ``pretrained_cfg``, ``num_classes``, ``drop_rate``, ``features_only``, ``out_indices``)."""
    kwargs.pop("cache_dir", None)  # our loader keeps its own cache
    if kwargs:
        raise ValueError(f"unsupported arguments for MobileNet V1: {', '.join(sorted(kwargs))}")
    if in_chans != 3:
        raise ValueError(f"in_chans={in_chans}: MobileNet V1 takes RGB images (3 channels)")
    tag = getattr(pretrained_cfg, "tag", pretrained_cfg) or next(iter(TAGS))
    if tag not in TAGS:
        raise ValueError(f"unknown tag {tag!r} for {_architecture(alpha, resolution)}; choose from {', '.join(TAGS)}")
    member = _record(alpha, resolution, TAGS[tag])
    if pretrained:
        model = mobilenet_v1(weights=member, dropout=drop_rate)
    else:
        model = MobileNetV1(google_config(alpha))
        if drop_rate is not None:
            model.dropout.p = drop_rate
    names = {"architecture": _architecture(alpha, resolution), "tag": tag}
    model.pretrained_cfg = {**model.pretrained_cfg, **_cfg(member), **(pretrained_cfg_overlay or {}), **names}
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    return MobileNetV1Features(model, out_indices) if features_only else model


def _entrypoint(alpha: float, resolution: int) -> Callable[..., nn.Module]:
    def create(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _create(alpha, resolution, pretrained, **kwargs)

    create.__name__ = create.__qualname__ = _architecture(alpha, resolution)
    create.__module__ = __name__
    create.__doc__ = f"MobileNet V1 {alpha:g}/{resolution} (Google's architecture; tags: {', '.join(TAGS)})."
    return create


for _alpha, _resolution in CONFIGS:
    globals()[_architecture(_alpha, _resolution)] = register_model(_entrypoint(_alpha, _resolution))
