"""CPU training speed-ups, swapped into a model for training only.

:func:`accelerate` turns a plain :class:`~mobilenet_v1.model.MobileNetV1` into one whose
layers train through faster kernels (:mod:`.layers`: fused batch norm + ReLU in C,
depthwise backward as convolutions, thin channels_last batch norm in NCHW; the C kernels
are built by :mod:`.native`). The swap changes only each module's class, never its
parameters, buffers or state-dict keys, and every layer computes what the plain one
computes; the model itself stays plain ``torch.nn`` (scriptable, traceable, exportable).

May import: ``model``, ``files``, ``weights.download``.
"""

from __future__ import annotations

from torch import nn

from ...model import Conv2dSame, ConvBNAct, Stem
from .layers import BatchNorm2d, DepthwiseConv2d, DepthwiseConv2dSame, FusedConvBNAct
from .native import kernels_summary

__all__ = ["accelerate", "kernels_summary"]


def _is_depthwise_3x3(conv: nn.Conv2d) -> bool:
    return conv.groups == conv.in_channels == conv.out_channels and conv.kernel_size == (3, 3)


def accelerate(model: nn.Module) -> nn.Module:
    """Swap the training kernels into ``model`` (in place) and return it."""
    swaps: dict[type, type] = {
        ConvBNAct: FusedConvBNAct,
        Stem: FusedConvBNAct,  # the stem's input check is for eager use; the trainer feeds its own batches
        nn.BatchNorm2d: BatchNorm2d,
        nn.Conv2d: DepthwiseConv2d,
        Conv2dSame: DepthwiseConv2dSame,
    }
    for module in model.modules():
        new = swaps.get(type(module))
        if new is None or (isinstance(module, nn.Conv2d) and not _is_depthwise_3x3(module)):
            continue
        module.__class__ = new
    return model
