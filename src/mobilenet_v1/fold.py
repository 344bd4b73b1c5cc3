"""Batch norm folded into the convolution before it: the deployment form of Table 1.

Inference-time BN is an affine map per channel, so it merges into the preceding
convolution exactly; every export, the compiled path and quantization-aware training
start from the folded model (the form Google's TFLite models come in).

May import: ``config``, ``model``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .config import MobileNetV1Config
from .model import ConvBNAct, MobileNetV1

__all__ = ["fuse_bn"]


@torch.no_grad()
def fuse_bn(model: MobileNetV1) -> MobileNetV1:
    """A copy of ``model`` with every BatchNorm folded into the conv before it.

    ``w' = w * gamma / sqrt(var + eps)``, ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``:
    inference-time BN is an affine map per channel, so it merges into the convolution
    exactly. The copy has ``folded_bn=True`` (the form of Google's TFLite models); an
    already folded model is simply copied.
    """
    folded = copy.deepcopy(model).eval()
    if model.config.folded_bn:
        return folded
    for module in folded.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            conv, bn = module.conv, module.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * scale)
            module.bn = nn.Identity()
    folded.config = MobileNetV1Config(**{**model.config.to_dict(), "folded_bn": True})
    return folded
