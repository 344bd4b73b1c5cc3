"""``mobilenet_v1(...)``: the one builder, above both the model and the weights.

As in torchvision, the builder either builds the architecture it is asked for or loads
weights into the architecture they were trained with; an architecture argument that
conflicts with the weights is a ``ValueError`` naming both values, and a different number
of classes comes only from an explicit head replacement (``model.reset_classifier(n)``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from .model import MobileNetV1, MobileNetV1Config, validate_alpha
from .weights import MobileNetV1Weights, WeightsRecord, load_weights

__all__ = ["mobilenet_v1"]


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
) -> MobileNetV1:
    """Build MobileNet V1 (Table 1) for width multiplier ``alpha`` (Section 3.3).

    Without ``weights`` the defaults are the paper's: ``alpha=1.0``, 1000 classes, ReLU,
    symmetric padding, BN epsilon 1e-5, dropout 0.001 (see :class:`MobileNetV1Config`).
    Google's released models use ``activation="relu6", padding="same", bn_eps=1e-3,
    num_classes=1001`` (``weights.google_config``); with ``folded_bn=True`` each conv has a
    bias and no BN layer follows it. ``variant`` picks the paper's ablations:
    ``"full-conv"`` (Table 4) or ``"shallow"`` (Table 5).

    ``weights`` (a ``MobileNetV1Weights`` member, its name, Google's model name or a
    ``.tflite``/``.safetensors`` path) builds the weights' own architecture and loads them,
    in training mode like any freshly built model. Any other argument given must agree
    with the weights (``dropout`` may be changed: it has no weights).
    """
    arch: dict[str, Any] = {
        "alpha": None if alpha is None else validate_alpha(alpha),
        "num_classes": num_classes,
        "variant": variant,
        "activation": activation,
        "padding": padding,
        "bn_eps": bn_eps,
        "folded_bn": folded_bn,
        "channel_rule": channel_rule,
    }
    given = {k: v for k, v in arch.items() if v is not None}
    if weights is None:
        return MobileNetV1(MobileNetV1Config(**given, **({} if dropout is None else {"dropout": dropout})))
    model = load_weights(weights)[0]
    for name, value in given.items():
        have = getattr(model.config, name)
        if value != have:
            raise ValueError(f"{name}={value!r} conflicts with weights {weights} ({name}={have!r})")
    if dropout is not None:
        model.config = replace(model.config, dropout=dropout)
        model.dropout.p = dropout
    return model.train()  # like any freshly built model; call .eval() for inference
