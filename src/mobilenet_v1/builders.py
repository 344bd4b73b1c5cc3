"""``mobilenet_v1(...)``: the one builder, above both the model and the weights.

As in torchvision, the builder either builds the architecture it is asked for or loads
weights into the architecture they were trained with; an architecture argument that
conflicts with the weights is a ``ValueError`` naming both values, and a different number
of classes comes only from an explicit head replacement (``model.reset_classifier(n)``).
The builder is registered with torchvision (``torchvision.models.get_model("mobilenet_v1",
weights=...)``, ``get_model_weights("mobilenet_v1")``); ``features_only`` gives timm's
feature extractor. Annotations stay evaluated (no ``from __future__ import annotations``):
torchvision finds the weights enum from the ``weights`` annotation.

May import: ``config``, ``model``, ``weights``.
"""

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from torch import nn
from torchvision.models._api import register_model

from .config import MobileNetV1Config
from .model import MobileNetV1, MobileNetV1Features
from .weights import MobileNetV1Weights, WeightsRecord, load_weights

__all__ = ["mobilenet_v1"]


@register_model(name="mobilenet_v1")
def mobilenet_v1(
    *,
    weights: MobileNetV1Weights | WeightsRecord | str | Path | None = None,
    alpha: float | None = None,
    num_classes: int | None = None,
    variant: Literal["standard", "full-conv", "shallow"] | None = None,
    activation: Literal["relu", "relu6"] | None = None,
    padding: Literal["symmetric", "same"] | None = None,
    bn_eps: float | None = None,
    folded_bn: bool | None = None,
    channel_rule: Literal["tf-slim", "divisible-by-8"] | None = None,
    dropout: float | None = None,
    features_only: bool = False,
    out_indices: int | tuple[int, ...] | list[int] = (0, 1, 2, 3, 4),
) -> nn.Module:
    """Build MobileNet V1 (Table 1) for width multiplier ``alpha`` (Section 3.3).

    Without ``weights`` the defaults are the paper's: ``alpha=1.0``, 1000 classes, ReLU,
    symmetric padding, BN epsilon 1e-5, dropout 0.001 (see :class:`MobileNetV1Config`);
    ``num_classes=0`` leaves out the classifier (the pooled features are the output).
    Google's released models use ``activation="relu6", padding="same", bn_eps=1e-3,
    num_classes=1001`` (``weights.google_config``); with ``folded_bn=True`` each conv has a
    bias and no BN layer follows it. ``variant`` picks the paper's ablations:
    ``"full-conv"`` (Table 4) or ``"shallow"`` (Table 5).

    ``weights`` (a ``MobileNetV1Weights`` member, its name, Google's model name or a
    ``.tflite``/``.safetensors`` path) builds the weights' own architecture and loads them,
    in training mode like any freshly built model. Any other argument given must agree
    with the weights (``dropout`` may be changed: it has no weights).

    ``features_only=True`` returns :class:`MobileNetV1Features`: the feature maps at the
    ``feature_info`` levels ``out_indices`` (strides 2, 4, 8, 16, 32), as timm's
    ``features_only`` (Section 4.6: MobileNet as a detection backbone).
    """
    weights = _check_weights_argument(weights)
    if not isinstance(features_only, bool):
        raise ValueError(f"features_only must be True or False, got {features_only!r}")
    _check_out_indices(out_indices)
    arch: dict[str, Any] = {
        "alpha": alpha,
        "num_classes": num_classes,
        "variant": variant,
        "activation": activation,
        "padding": padding,
        "bn_eps": bn_eps,
        "folded_bn": folded_bn,
        "channel_rule": channel_rule,
    }
    given = {k: v for k, v in arch.items() if v is not None}
    # Every argument is checked (and numpy scalars made plain numbers) before any weights
    # are read or downloaded and before any tensor is allocated.
    config = MobileNetV1Config(**given, **({} if dropout is None else {"dropout": dropout}))
    given = {k: getattr(config, k) for k in given}
    if weights is None:
        model = MobileNetV1(config)
    else:
        model = _with_weights(weights, given, None if dropout is None else config.dropout)
    return MobileNetV1Features(model, out_indices) if features_only else model


def _check_weights_argument(weights: Any) -> Any:
    """``weights`` as the loader takes it (a path-like object becomes a ``Path``), or a
    ``ValueError`` naming a value of any other type."""
    if weights is None or isinstance(weights, MobileNetV1Weights | WeightsRecord | str | Path):
        return weights
    if isinstance(weights, os.PathLike):
        return Path(os.fspath(weights))
    raise ValueError(
        "weights must be None, a MobileNetV1Weights member, its name, Google's model name or a "
        f"path to a .tflite/.safetensors file, got {type(weights).__name__} {weights!r}"
    )


def _check_out_indices(out_indices: Any) -> None:
    """An int or a list/tuple of ints (bools refused); their range is checked by the model."""
    items = [out_indices] if not isinstance(out_indices, list | tuple) else list(out_indices)
    if not items or any(isinstance(i, bool) or not isinstance(i, int) for i in items):
        raise ValueError(f"out_indices must be an int or a list/tuple of ints, got {out_indices!r}")


def _with_weights(weights: Any, given: dict[str, Any], dropout: float | None) -> MobileNetV1:
    model, _ = load_weights(weights)
    for name, value in given.items():
        have = getattr(model.config, name)
        if value != have:
            raise ValueError(f"{name}={value!r} conflicts with weights {weights} ({name}={have!r})")
    if dropout is not None:
        model.config = replace(model.config, dropout=dropout)
        model.dropout.p = dropout
    return model.train()  # like any freshly built model; call .eval() for inference
