"""The configuration of MobileNet V1: the paper's Table 1 as data and the choices around it.

Table 1 lists one full 3x3 convolution with stride 2, then 13 depthwise separable blocks
(Section 3.1); :func:`layer_plan` turns a :class:`MobileNetV1Config` (width multiplier
alpha, Section 3.3; the paper's ablation variants, Tables 4-5; the options of Google's
released models) into that list of convolutions, which the model (:mod:`.model`) and the
cost (:mod:`.cost`) both read. Every value is validated here, with bounds, before anything
is allocated.

May import: nothing of the project.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "MIN_INPUT_SIZE",
    "SHALLOW_REMOVED",
    "TABLE1",
    "LayerSpec",
    "MobileNetV1Config",
    "check_choice",
    "layer_plan",
    "scaled_channels",
    "validate_alpha",
    "validate_input_size",
    "validate_num_classes",
]

Variant = Literal["standard", "full-conv", "shallow"]
VARIANTS: tuple[str, ...] = ("standard", "full-conv", "shallow")
ACTIVATIONS: tuple[str, ...] = ("relu", "relu6")
PADDINGS: tuple[str, ...] = ("symmetric", "same")
CHANNEL_RULES: tuple[str, ...] = ("tf-slim", "divisible-by-8")
MIN_INPUT_SIZE = 32
# Bounds that keep a configuration buildable before anything is allocated. The paper
# studies alpha <= 1 (Section 3.3) and published variants go up to 1.4; alpha 4 gives the
# widest layer 4096 channels and the network ~67 M parameters (270 MB in float32), and a
# larger one is a typo (or an overflow: alpha 1e308 would make the widths infinite).
MAX_ALPHA = 4.0
MAX_CHANNELS = 4096  # the widest layer at MAX_ALPHA; min_depth may not exceed it either
# 100,000 classes: 4.6x ImageNet-21k's 21,841; the classifier is then 102 M weights at alpha 1.
MAX_CLASSES = 100_000
# 8192 x 8192 input: the stem's float32 output alone is 2 GB per image at alpha 1.
MAX_INPUT_SIZE = 8192

# Paper Table 1, one row per layer group: (depthwise stride, pointwise out channels at
# alpha=1). Row 0 is the stem, a full 3x3 conv. Table 1 prints "s2" on the last depthwise
# layer; its 7x7 input and the 569M mult-adds of Table 6 show the stride is 1.
TABLE1: tuple[tuple[int, int], ...] = (
    (2, 32),  # Conv / s2, 3x3x3x32
    (1, 64),  # Conv dw / s1, Conv / s1 1x1x32x64
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    (1, 512),  # 5x, Table 1's "5x" rows at 14x14x512
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (2, 1024),
    (1, 1024),  # "s2" in Table 1 is a typo, see above
)
# Table 5's "Shallow MobileNet" removes the five 14x14x512 separable blocks (7-11).
SHALLOW_REMOVED: tuple[int, ...] = (7, 8, 9, 10, 11)


@dataclass(frozen=True)
class LayerSpec:
    """One convolution of the network, as counted in Table 1 (28 layers + FC)."""

    name: str
    kind: Literal["conv", "depthwise", "pointwise"]
    in_channels: int
    out_channels: int
    kernel: int
    stride: int


@dataclass(frozen=True)
class MobileNetV1Config:
    """Everything that determines the architecture (and so its cost)."""

    alpha: float = 1.0
    num_classes: int = 1000
    variant: str = "standard"
    activation: str = "relu"
    padding: str = "symmetric"
    bn_eps: float = 1e-5
    folded_bn: bool = False
    channel_rule: str = "tf-slim"
    dropout: float = 0.001
    min_depth: int = 8

    def __post_init__(self) -> None:
        # Numbers are stored as plain Python numbers (numpy scalars are accepted), so that
        # the config compares, hashes and serialises (config.json, weights metadata) alike.
        object.__setattr__(self, "alpha", validate_alpha(self.alpha))
        object.__setattr__(self, "num_classes", validate_num_classes(self.num_classes))
        check_choice("variant", self.variant, VARIANTS)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("padding", self.padding, PADDINGS)
        check_choice("channel_rule", self.channel_rule, CHANNEL_RULES)
        if not _is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not _is_real(self.bn_eps) or not 0.0 < self.bn_eps < math.inf:
            raise ValueError(f"bn_eps must be a finite number > 0, got {self.bn_eps!r}")
        if not isinstance(self.folded_bn, bool):
            raise ValueError(f"folded_bn must be True or False, got {self.folded_bn!r}")
        if not _is_integer(self.min_depth) or not 1 <= self.min_depth <= MAX_CHANNELS:
            raise ValueError(f"min_depth must be an integer from 1 to {MAX_CHANNELS}, got {self.min_depth!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "bn_eps", float(self.bn_eps))
        object.__setattr__(self, "min_depth", int(self.min_depth))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")


def _is_real(value: object) -> bool:
    """A real number: Python's or numpy's (registered as ``numbers.Real``), not a bool
    (numpy's ``bool_`` is not registered as a number)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value: object) -> bool:
    """An integer: Python's or numpy's (``numbers.Integral``), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def validate_alpha(alpha: object) -> float:
    """Return alpha as a float, or raise ValueError naming the bad value.

    Any real number (``0.25``, ``1``, ``numpy.float32(0.25)``) in ``(0, MAX_ALPHA]``; a
    larger width would only allocate (alpha 4 is already 4096 channels), and a huge one
    overflows the channel count."""
    if not _is_real(alpha):
        raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
    value = float(alpha)  # type: ignore[arg-type]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if value > MAX_ALPHA:
        raise ValueError(
            f"alpha must be at most {MAX_ALPHA:g} (the widest layer then has {MAX_CHANNELS} channels), got {alpha!r}"
        )
    return value


def validate_num_classes(num_classes: object) -> int:
    """Classes of the classifier; 0 means no classifier (the pooled features are the output).

    An integer (Python's or numpy's) from 0 to ``MAX_CLASSES``, checked before the
    classifier's weights are allocated."""
    if not _is_integer(num_classes) or not 0 <= num_classes <= MAX_CLASSES:  # type: ignore[operator]
        raise ValueError(f"num_classes must be an integer from 0 to {MAX_CLASSES}, got {num_classes!r}")
    return int(num_classes)  # type: ignore[call-overload]


def validate_input_size(size: object) -> tuple[int, int]:
    """Accept ``224`` or ``(h, w)``; both sides must be integers (Python's or numpy's)
    from 32 (Section 3.4) to ``MAX_INPUT_SIZE``."""
    sides = size if isinstance(size, (tuple, list)) else (size, size)
    if len(sides) != 2 or not all(_is_integer(s) for s in sides):
        raise ValueError(f"input size must be an integer or (height, width), got {size!r}")
    if min(sides) < MIN_INPUT_SIZE:
        raise ValueError(f"input size must be at least {MIN_INPUT_SIZE} pixels, got {size!r}")
    if max(sides) > MAX_INPUT_SIZE:
        raise ValueError(f"input size must be at most {MAX_INPUT_SIZE} pixels, got {size!r}")
    return int(sides[0]), int(sides[1])


def scaled_channels(channels: int, alpha: float, rule: str = "tf-slim", min_depth: int = 8) -> int:
    """Width multiplier (Section 3.3). TF-slim's rule is ``max(int(c * alpha), 8)``."""
    if rule == "tf-slim":
        return max(int(channels * alpha), min_depth)
    # torchvision's _make_divisible: round to a multiple of 8, never below 90%.
    value = channels * alpha
    rounded = max(min_depth, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * value else rounded


def layer_plan(config: MobileNetV1Config) -> list[LayerSpec]:
    """The convolutions of Table 1 for this configuration, in order (no FC)."""
    width = [scaled_channels(c, config.alpha, config.channel_rule, config.min_depth) for _, c in TABLE1]
    specs = [LayerSpec("stem", "conv", 3, width[0], 3, TABLE1[0][0])]
    for i in range(1, len(TABLE1)):
        if config.variant == "shallow" and i in SHALLOW_REMOVED:
            continue
        stride, cin, cout = TABLE1[i][0], width[i - 1], width[i]
        if config.variant == "full-conv":
            specs.append(LayerSpec(f"block{i}", "conv", cin, cout, 3, stride))
        else:
            specs.append(LayerSpec(f"block{i}.dw", "depthwise", cin, cin, 3, stride))
            specs.append(LayerSpec(f"block{i}.pw", "pointwise", cin, cout, 1, 1))
    return specs
