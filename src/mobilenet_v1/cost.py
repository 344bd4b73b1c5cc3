"""Mult-adds and parameters of MobileNet V1, layer by layer (Sections 3.1-3.4).

Conventions that reproduce the paper: a layer's mult-adds are counted at its *output*
size (standard conv ``Dk*Dk*M*N*Df*Df``, depthwise ``Dk*Dk*M*Df*Df``); the stem conv and
the FC layer are included; BN, activations, pooling and biases count zero; parameters are
weights only.

Two conventions for the input size:

- ``"exact"`` (default): every layer counted at its real feature-map size;
- ``"paper"``: the 224x224 model scaled as a whole by rho^2 = (H*W)/224^2, FC included,
  which is how Table 7 gets 290 M for 160 px and Table 9 gets 76 M for 0.50-160.

May import: ``config``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from .config import MobileNetV1Config, layer_plan, validate_input_size

__all__ = [
    "PAPER_ROWS",
    "LayerCost",
    "ModelCost",
    "PaperRow",
    "conv_cost",
    "model_cost",
    "paper_row_cost",
    "separable_cost",
]

Convention = Literal["exact", "paper"]
CONVENTIONS: tuple[str, ...] = ("exact", "paper")
PAPER_RESOLUTION = 224
KIND_LABELS = {
    "pointwise": "Conv 1x1",
    "depthwise": "Conv DW 3x3",
    "conv": "Conv 3x3",
    "fc": "Fully Connected",
}


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    mult_adds: int
    params: int


@dataclass(frozen=True)
class ModelCost:
    """Per-layer costs and their totals for one configuration and input size."""

    config: MobileNetV1Config
    input_size: tuple[int, int]
    convention: str
    layers: list[LayerCost] = field(repr=False)
    mult_adds: int
    params: int

    def shares(self) -> dict[str, dict[str, float]]:
        """Percent of mult-adds and parameters per layer type (paper Table 2)."""
        sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for layer in self.layers:
            sums[layer.kind][0] += layer.mult_adds
            sums[layer.kind][1] += layer.params
        total_ma = sum(v[0] for v in sums.values())
        total_p = sum(v[1] for v in sums.values())
        return {
            kind: {"mult_adds": 100.0 * ma / total_ma, "params": 100.0 * p / total_p} for kind, (ma, p) in sums.items()
        }

    def to_dict(self, per_layer: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "alpha": self.config.alpha,
            "input_size": list(self.input_size),
            "num_classes": self.config.num_classes,
            "variant": self.config.variant,
            "convention": self.convention,
            "mult_adds": self.mult_adds,
            "params": self.params,
            "shares": self.shares(),
        }
        if per_layer:
            out["layers"] = [
                {**layer.__dict__, "input_size": list(layer.input_size), "output_size": list(layer.output_size)}
                for layer in self.layers
            ]
        return out


def conv_cost(kernel: int, in_ch: int, out_ch: int, out_size: int | tuple[int, int]) -> tuple[int, int]:
    """(mult-adds, weights) of a standard conv: Dk*Dk*M*N*Df*Df (Section 3.1)."""
    h, w = out_size if isinstance(out_size, tuple) else (out_size, out_size)
    params = kernel * kernel * in_ch * out_ch
    return params * h * w, params


def separable_cost(kernel: int, in_ch: int, out_ch: int, out_size: int | tuple[int, int]) -> tuple[int, int]:
    """(mult-adds, weights) of a depthwise separable conv: Dk*Dk*M*Df*Df + M*N*Df*Df."""
    h, w = out_size if isinstance(out_size, tuple) else (out_size, out_size)
    dw, pw = kernel * kernel * in_ch, in_ch * out_ch
    return (dw + pw) * h * w, dw + pw


def _exact_layers(config: MobileNetV1Config, size: tuple[int, int]) -> list[LayerCost]:
    layers = []
    h, w = size
    for spec in layer_plan(config):
        # Stride-2 3x3 convs (symmetric pad 1 or TF "SAME") give ceil(D / 2).
        oh, ow = math.ceil(h / spec.stride), math.ceil(w / spec.stride)
        cin_per_group = 1 if spec.kind == "depthwise" else spec.in_channels
        params = spec.kernel * spec.kernel * cin_per_group * spec.out_channels
        layers.append(
            LayerCost(
                spec.name,
                spec.kind,
                spec.in_channels,
                spec.out_channels,
                spec.kernel,
                spec.stride,
                (h, w),
                (oh, ow),
                params * oh * ow,
                params,
            )
        )
        h, w = oh, ow
    fc_params = layers[-1].out_channels * config.num_classes
    layers.append(
        LayerCost("fc", "fc", layers[-1].out_channels, config.num_classes, 1, 1, (1, 1), (1, 1), fc_params, fc_params)
    )
    return layers


def model_cost(
    config: MobileNetV1Config,
    input_size: int | tuple[int, int] = 224,
    convention: Convention = "exact",
) -> ModelCost:
    """Cost of the network described by ``config`` at ``input_size`` (Sections 3.1-3.4)."""
    size = validate_input_size(input_size)
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose from {', '.join(CONVENTIONS)}")
    if convention == "exact":
        layers = _exact_layers(config, size)
    else:
        rho2 = (size[0] * size[1]) / PAPER_RESOLUTION**2
        base = _exact_layers(config, (PAPER_RESOLUTION, PAPER_RESOLUTION))
        layers = [LayerCost(**{**layer.__dict__, "mult_adds": round(layer.mult_adds * rho2)}) for layer in base]
    return ModelCost(
        config,
        size,
        convention,
        layers,
        sum(layer.mult_adds for layer in layers),
        sum(layer.params for layer in layers),
    )


@dataclass(frozen=True)
class PaperRow:
    """One MobileNet row of the paper's Tables 4-9: what was printed, and our config."""

    table: str
    label: str
    alpha: float
    resolution: int
    variant: str
    top1: float
    mult_adds_m: float  # as printed, millions
    params_m: float | None  # as printed, millions
    convention: str = "exact"
    note: str = ""


PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow(
        "4",
        "Conv MobileNet",
        1.0,
        224,
        "full-conv",
        71.7,
        4866,
        29.3,
        note="paper prints 4866; the count gives 4867.3 (typo in Table 4)",
    ),
    PaperRow("4", "MobileNet", 1.0, 224, "standard", 70.6, 569, 4.2),
    PaperRow("5", "0.75 MobileNet", 0.75, 224, "standard", 68.4, 325, 2.6),
    PaperRow("5", "Shallow MobileNet", 1.0, 224, "shallow", 65.3, 307, 2.9),
    PaperRow("6", "1.0 MobileNet-224", 1.0, 224, "standard", 70.6, 569, 4.2),
    PaperRow("6", "0.75 MobileNet-224", 0.75, 224, "standard", 68.4, 325, 2.6),
    PaperRow("6", "0.5 MobileNet-224", 0.5, 224, "standard", 63.7, 149, 1.3),
    PaperRow("6", "0.25 MobileNet-224", 0.25, 224, "standard", 50.6, 41, 0.5),
    PaperRow("7", "1.0 MobileNet-224", 1.0, 224, "standard", 70.6, 569, None, "paper"),
    PaperRow("7", "1.0 MobileNet-192", 1.0, 192, "standard", 69.1, 418, None, "paper"),
    PaperRow(
        "7",
        "1.0 MobileNet-160",
        1.0,
        160,
        "standard",
        67.2,
        290,
        None,
        "paper",
        note="rho^2-scaled; the exact per-layer count is 290.68",
    ),
    PaperRow("7", "1.0 MobileNet-128", 1.0, 128, "standard", 64.4, 186, None, "paper"),
    PaperRow("8", "1.0 MobileNet-224", 1.0, 224, "standard", 70.6, 569, 4.2),
    PaperRow(
        "9",
        "0.50 MobileNet-160",
        0.5,
        160,
        "standard",
        60.2,
        76,
        1.32,
        "paper",
        note="rho^2-scaled; the exact per-layer count is 76.52",
    ),
)


def paper_row_cost(row: PaperRow) -> ModelCost:
    """Our cost for one of the paper's rows, under the convention the paper used for it."""
    config = MobileNetV1Config(alpha=row.alpha, variant=row.variant)
    return model_cost(config, row.resolution, row.convention)  # type: ignore[arg-type]
