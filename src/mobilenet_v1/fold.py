"""Batch norm folded into the convolution before it, and back: the deployment form of Table 1.

Inference-time BN is an affine map per channel, so it merges into the preceding
convolution exactly; every export, the compiled path and quantization-aware training
start from the folded model (the form Google's TFLite models come in). Training the
whole network from a folded model may put the BN layers back (:func:`unfold_bn`), each
one the identity on given images, so that the convolutions train with batch statistics
again as in Section 3.2.

May import: ``model``.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from .model import ConvBNAct, MobileNetV1

__all__ = ["fuse_bn", "unfold_bn"]


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
    folded.config = replace(model.config, folded_bn=True)
    return folded


@torch.no_grad()
def unfold_bn(model: MobileNetV1, images: torch.Tensor, batch_size: int = 50) -> MobileNetV1:
    """A copy of a folded ``model`` with a BatchNorm after every convolution again, computing
    what ``model`` computes (the inverse of :func:`fuse_bn`).

    Each BN's statistics are those of its convolution's output ``z`` (without the bias ``b``)
    on ``images`` (float, preprocessed; run ``batch_size`` at a time), and its affine map
    undoes them: ``mean = E[z]``, ``var = Var[z]``, ``gamma = sqrt(var + eps)``,
    ``beta = b + mean``. In inference ``bn(z) = z + b``, the folded layer, up to rounding;
    in training, batch statistics near those of ``images`` give nearly the same, and the
    layer then trains as a Section 3.2 conv + BN. The copy has ``folded_bn=False`` and the
    mode of ``model``; an unfolded model is simply copied.
    """
    unfolded = copy.deepcopy(model).eval()
    if not model.config.folded_bn:
        return unfolded.train(model.training)
    layers = [m for m in unfolded.modules() if isinstance(m, ConvBNAct)]
    # Per channel: the number of values, their sum and their sum of squares (float64).
    sums = {id(m.conv): torch.zeros(3, m.conv.out_channels, dtype=torch.float64) for m in layers}

    def record(conv: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        z = (out - conv.bias.view(1, -1, 1, 1)).double()
        count = torch.full_like(z[0, :, 0, 0], z[:, 0].numel())
        sums[id(conv)] += torch.stack([count, z.sum((0, 2, 3)), z.square().sum((0, 2, 3))]).cpu()

    hooks = [m.conv.register_forward_hook(record) for m in layers]
    try:
        for batch in images.split(batch_size):
            unfolded(batch)
    finally:
        for hook in hooks:
            hook.remove()
    for module in layers:
        conv, (count, total, squares) = module.conv, sums[id(module.conv)]
        mean = total / count
        var = (squares / count - mean.square()).clamp_min(0)
        bn = nn.BatchNorm2d(conv.out_channels, eps=model.config.bn_eps).to(conv.weight)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_((var + bn.eps).sqrt())
        bn.bias.copy_(conv.bias + mean)
        conv.bias = None
        module.bn = bn
    unfolded.config = replace(model.config, folded_bn=False)
    return unfolded.train(model.training)
