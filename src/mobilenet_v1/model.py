"""MobileNet V1 (Howard et al., 2017, arXiv:1704.04861).

The network is the paper's Table 1: one full 3x3 convolution with stride 2, then 13
depthwise separable blocks (Section 3.1), global average pooling, dropout and a fully
connected classifier. The width multiplier alpha (Section 3.3) thins every layer; the
resolution multiplier rho (Section 3.4) is simply the input size. The table itself and
the configuration live in :mod:`.config`; this module builds the layers from its plan.

Options needed to load Google's released models (TF-slim, TFLite): ReLU6, TensorFlow
"SAME" padding (asymmetric on stride 2), BN epsilon 1e-3, 1001 outputs, and batch norm
folded into the convolutions (``folded_bn=True``: each conv gets a bias, no BN layer).

May import: ``config``, ``hub``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint_sequential

from .config import MIN_INPUT_SIZE, LayerSpec, MobileNetV1Config, check_choice, layer_plan, validate_num_classes
from .hub import HubMixin

__all__ = ["ConvBNAct", "MobileNetV1", "MobileNetV1Features", "Stem", "same_padding", "take_indices"]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one side: the output has
    ``ceil(size / stride)`` positions, and an odd total puts the extra pixel after.

    Plain integer arithmetic on ``size``, so the padding follows the input when ``size``
    is symbolic (``torch.export`` with a dynamic height/width) or traced
    (``torch.jit.trace`` records it); the total can only be negative when ``kernel <
    stride``, which Table 1 never has (3x3 at stride 2).
    """
    total = (size + stride - 1) // stride * stride - stride + kernel - size
    if kernel < stride:
        total = max(total, 0)
    return total // 2, total - total // 2


@torch.fx.wrap
def pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Pad ``x`` (N, C, H, W) for a convolution with TensorFlow "SAME" padding."""
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1])
    return F.pad(x, [left, right, top, bottom])


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (Google's models): any extra pad goes after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(pad_same(x, self.kernel_size, self.stride), self.weight, self.bias)


class ConvBNAct(nn.Module):
    """Conv + BN + activation: every layer of Table 1 (Figure 3)."""

    def __init__(self, spec: LayerSpec, config: MobileNetV1Config) -> None:
        super().__init__()
        same_pad = config.padding == "same" and spec.stride > 1
        self.conv = (Conv2dSame if same_pad else nn.Conv2d)(
            spec.in_channels,
            spec.out_channels,
            spec.kernel,
            stride=spec.stride,
            padding=0 if same_pad else spec.kernel // 2,
            groups=spec.in_channels if spec.kind == "depthwise" else 1,
            bias=config.folded_bn,
        )
        self.bn = nn.Identity() if config.folded_bn else nn.BatchNorm2d(spec.out_channels, eps=config.bn_eps)
        self.act = nn.ReLU6(inplace=True) if config.activation == "relu6" else nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Stem(ConvBNAct):
    """Table 1's first layer, a full 3x3 convolution with stride 2. It is the only layer
    that sees the image, so it refuses an input the network cannot take
    (:meth:`check_input`), on every path: ``forward``, ``forward_intermediates``, the
    feature extractor and timm's wrappers, which call the layers themselves."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.act(self.bn(self.conv(x)))

    def check_input(self, x: torch.Tensor, min_size: int = MIN_INPUT_SIZE) -> None:
        """Refuse, with a ``ValueError`` naming what is wrong, an input the network cannot take:
        anything but a dense floating-point tensor of shape (N, 3, H, W) with H, W >= 32
        (Section 3.4's smallest input, a 1x1 map at stride 32), on the device of the stem's
        weight and of its dtype. Under ``torch.autocast`` float16, bfloat16 and float32
        inputs all fit a float16, bfloat16 or float32 model (autocast casts them for each layer;
        it never casts float64).

        Only metadata is read (type, layout, dtype, device, shape): no data, no host sync. The
        check belongs to eager use: under FX tracing (``symbolic_trace``, ``prepare_fx``),
        ``torch.jit.trace``, ``torch.compile`` and ``torch.export`` it does nothing, so the
        captured graph is the network alone; under ``torch.jit.script`` it is compiled (the type
        is then the annotation's, and autocast is not consulted).
        """
        if not torch.jit.is_scripting():
            if _capturing():
                return
            if not isinstance(x, torch.Tensor):
                kind = "None" if x is None else f"{type(x).__module__}.{type(x).__qualname__}".removeprefix("builtins.")
                raise ValueError(f"expected a torch.Tensor of shape (N, 3, H, W), got {kind}")
        if x.is_sparse or x.is_nested or x.layout != torch.strided:
            raise ValueError(f"expected a dense (strided) tensor, got layout {x.layout}")
        if not x.is_floating_point():
            raise ValueError(
                f"expected a floating-point input (normalized images), got dtype {x.dtype}; convert it, e.g. x.float()"
            )
        like = self.conv.weight  # read only here: a captured graph holds no use of it
        if x.device != like.device:
            what = "the meta device (shapes only, no data)" if x.device.type == "meta" else str(x.device)
            raise ValueError(f"input is on {what} but the model's parameters are on {like.device}")
        if x.dtype != like.dtype and like.is_floating_point():
            # autocast casts float16/bfloat16/float32 tensors for each layer, never float64
            castable = x.dtype != torch.float64 and like.dtype != torch.float64
            if torch.jit.is_scripting() or not castable or not _autocasting(x.device.type):
                raise ValueError(
                    f"input dtype {x.dtype} differs from the model's parameters ({like.dtype}): convert the "
                    f"input or the model, or run under torch.autocast"
                )
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected input of shape (N, 3, H, W), got {x.shape}")
        if min(x.shape[2], x.shape[3]) < min_size:
            raise ValueError(f"input must be at least {min_size}x{min_size} pixels, got {x.shape[2]}x{x.shape[3]}")


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + act, then 1x1 pointwise conv + BN + act (Section 3.1)."""

    def __init__(self, dw: LayerSpec, pw: LayerSpec, config: MobileNetV1Config) -> None:
        super().__init__()
        self.dw = ConvBNAct(dw, config)
        self.pw = ConvBNAct(pw, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


def _build_features(plan: list[LayerSpec], config: MobileNetV1Config) -> nn.Sequential:
    layers: list[nn.Module] = [Stem(plan[0], config)]
    i = 1
    while i < len(plan):
        if plan[i].kind == "depthwise":
            layers.append(DepthwiseSeparable(plan[i], plan[i + 1], config))
            i += 2
        else:
            layers.append(ConvBNAct(plan[i], config))
            i += 1
    return nn.Sequential(*layers)


class MobileNetV1(HubMixin, nn.Module):
    """MobileNet V1 (Table 1) with timm's model contract, and the Hugging Face Hub's
    ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` (:class:`~.hub.HubMixin`).

    ``features`` holds the stem and the 13 blocks; ``feature_info`` names, for each
    output stride 2, 4, 8, 16 and 32, the last block at that stride (its ``module``,
    ``reduction`` and ``num_chs``), for use as a detection or segmentation backbone
    (Section 4.6). ``num_classes=0`` (or ``reset_classifier(0)``) leaves the pooled
    features as the output, as in timm.
    """

    __jit_unused_properties__ = ["default_cfg"]  # noqa: RUF012 (TorchScript reads this list)

    def __init__(self, config: MobileNetV1Config) -> None:
        super().__init__()
        self.config = config
        self.plan = layer_plan(config)
        self.features = _build_features(self.plan, config)
        self.num_features = self.head_hidden_size = self.plan[-1].out_channels
        self.num_classes = config.num_classes
        self.global_pool = "avg"
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = _classifier(self.num_features, config.num_classes)
        self.feature_info = _feature_info(self.features)
        self.grad_checkpointing = False
        self.pretrained_cfg = _default_cfg(config)
        self._init_weights()

    def _init_weights(self) -> None:
        # TF-slim: truncated normal, stddev 0.09, for every conv; BN starts at identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.09, a=-0.18, b=0.18)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_sequential(self.features, len(self.features), x, use_reentrant=False)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((2, 3))  # global average pooling; a mean exports with a symbolic size
        x = self.dropout(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's contract: the feature maps of the ``feature_info`` levels ``indices``
        (``None``: all, an int ``n``: the last ``n``, a sequence: those, negative ones
        from the end), with the final feature map first unless ``intermediates_only``.
        ``stop_early`` stops after the last level asked for; MobileNet V1 has no final
        norm layer, so ``norm`` changes nothing."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, _ = take_indices(len(self.feature_info), indices)
        taps = [self.feature_info[i]["index"] for i in take]
        last = max(taps) if stop_early or intermediates_only else len(self.features) - 1
        intermediates = []
        for i, layer in enumerate(self.features[: last + 1]):
            x = layer(x)
            if i in taps:
                intermediates.append(x.permute(0, 2, 3, 1) if output_fmt == "NHWC" else x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """timm's contract: drop the blocks after the last level in ``indices`` (and the
        head, unless ``prune_head=False``); returns the absolute level indices."""
        take, max_index = take_indices(len(self.feature_info), indices)
        self.features = self.features[: self.feature_info[max_index]["index"] + 1]
        self.feature_info = self.feature_info[: max_index + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """timm's parameter groups (layer-wise lr decay, ``timm.optim``): the stem, then each
        separable block of Table 1 (its depthwise and pointwise layers together); the
        classifier, matched by neither, is the last group."""
        return {"stem": r"^features\.0\.", "blocks": r"^features\.(\d+)\."}

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name of :attr:`pretrained_cfg`."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:
        self.pretrained_cfg = cfg

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a freshly initialised one (e.g. for fine-tuning);
        ``0`` removes it, so that the model returns its pooled features (timm's rule), and
        ``global_pool=""`` removes the pooling too."""
        validate_num_classes(num_classes)
        if global_pool is not None:
            check_choice("global_pool", global_pool, ("avg", ""))
            self.global_pool = global_pool
        if num_classes and not self.global_pool:
            raise ValueError("a classifier needs pooled features: give global_pool='avg' with num_classes > 0")
        self.classifier = _classifier(self.num_features, num_classes)
        if isinstance(self.classifier, nn.Linear):
            nn.init.normal_(self.classifier.weight, std=0.01)
            nn.init.zeros_(self.classifier.bias)
        self.num_classes = num_classes
        self.config = replace(self.config, num_classes=num_classes)
        # the class names belonged to the old classifier
        cfg = {k: v for k, v in self.pretrained_cfg.items() if k != "label_names"}
        self.pretrained_cfg = {**cfg, "num_classes": num_classes}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable


class MobileNetV1Features(nn.Module):
    """The feature maps of a :class:`MobileNetV1` at the ``feature_info`` levels
    ``out_indices`` (timm's ``features_only``); the blocks after the last one are dropped."""

    def __init__(self, model: MobileNetV1, out_indices: int | list[int] | tuple[int, ...] = (0, 1, 2, 3, 4)) -> None:
        super().__init__()
        take, max_index = take_indices(len(model.feature_info), out_indices)
        self.feature_info = [model.feature_info[i] for i in take]
        self.taps = [info["index"] for info in self.feature_info]
        self.features = model.features[: model.feature_info[max_index]["index"] + 1]
        self.config = model.config

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
        return outs


def take_indices(count: int, indices: int | list[int] | tuple[int, ...] | None) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: the absolute indices among ``count`` levels and the
    largest; ``None`` is all, an int ``n`` the last ``n``, negative entries count from the end."""
    if indices is None:
        indices = count
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ValueError(f"last-n indices must be 1 to {count}, got {indices}")
        take = list(range(count - indices, count))
    else:
        take = [count + i if i < 0 else i for i in indices]
        if not take or not all(0 <= i < count for i in take):
            raise ValueError(f"feature indices must be in [-{count}, {count - 1}], got {list(indices)}")
    return take, max(take)


def _classifier(num_features: int, num_classes: int) -> nn.Module:
    return nn.Linear(num_features, num_classes) if num_classes else nn.Identity()


def _default_cfg(config: MobileNetV1Config) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for a model without weights: Table 1's 224 x 224 input,
    TF-slim's evaluation preset (87.5% centre crop, [-1, 1])."""
    return {
        "architecture": "mobilenet_v1",
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "num_classes": config.num_classes,
        "first_conv": "features.0.conv",
        "classifier": "classifier",
    }


@torch.jit.unused
def _capturing():
    # type: () -> bool
    """Whether a graph is being captured rather than the model run (see :func:`check_input`)."""
    return _fx_tracing() or torch.jit.is_tracing() or torch.compiler.is_compiling()


# FX's symbolic tracing alone (newer PyTorch; its older is_fx_tracing is also true under torch.export)
_fx_tracing = getattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing", torch.fx._symbolic_trace.is_fx_tracing)


@torch.jit.unused
def _autocasting(device_type):
    # type: (str) -> bool
    # (a type comment: torch.jit.unused reads real annotations, and this module's are strings)
    """Whether ``torch.autocast`` is on for this device type (not consulted under ``torch.jit.script``)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know
        return False


def _feature_info(features: nn.Sequential) -> list[dict[str, Any]]:
    info: dict[int, dict[str, Any]] = {}
    reduction = 1
    for i, layer in enumerate(features):
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
        reduction *= math.prod(c.stride[0] for c in convs)
        if reduction >= 2:
            info[reduction] = {
                "index": i,
                "module": f"features.{i}",
                "reduction": reduction,
                "num_chs": convs[-1].out_channels,
            }
    return [info[r] for r in sorted(info)]
