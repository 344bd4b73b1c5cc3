"""Drop-in layers that keep the CPU training step fast.

The classes are ``nn.Module`` subclasses with the parameters, buffers, state-dict keys and
results of the PyTorch layer they replace, and the function computes what a BN module
and its activation module compute, with their parameters and buffers; all of them change
only which kernels run while training on the CPU, where PyTorch's kernels are far off
their usual speed for MobileNet V1's shapes (measured in
``benchmarks/train/depthwise_backward.py``, docs/training.md):

- :class:`BatchNorm2d`: the channels_last batch-norm backward kernel vectorizes over
  channels and is ~5x slower than the NCHW kernel when a layer has fewer channels than
  one AVX-512 vector (16): the stem and first depthwise layer of alpha 0.25 (8 channels).
- :func:`batch_norm_act`: batch norm with batch statistics and the ReLU after it, trained
  in four passes over the tensor instead of seven by the C kernels of ``csrc/bn_act.c``
  (float32/float64, channels_last): PyTorch's separate kernels make BN + ReLU half of the
  float32 step at 1.0/224, each pass memory-bound.
- :class:`DepthwiseConv2d`: oneDNN's bfloat16 depthwise backward-data has no fast
  kernel for stride 2 (10-20x slower than the forward pass). The input gradient of a
  3x3 depthwise convolution is itself a depthwise convolution of the output gradient:
  stride 1 with the flipped kernel; stride 2 split into its four output phases
  (even/odd rows x even/odd columns), each a stride-1 convolution with a 1x1, 1x2, 2x1
  or 2x2 slice of the kernel, interleaved into the result.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module

from ...model import Conv2dSame, ConvBNAct
from .native import bn_act_kernels

__all__ = [
    "BatchNorm2d",
    "DepthwiseConv2d",
    "DepthwiseConv2dSame",
    "FusedConvBNAct",
    "batch_norm_act",
    "depthwise_conv2d",
]

THIN_CHANNELS = 16  # one AVX-512 vector of float32
FUSED_MIN_ELEMENTS = 1 << 19  # below, the fused path's fixed costs can outweigh it (depthwise_backward.py)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that trains thin channels_last CPU tensors in NCHW layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.device.type == "cpu" and x.shape[1] < THIN_CHANNELS and _is_channels_last(x):
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _kernel(name: str, x: torch.Tensor):
    """The compiled kernel ``name`` for x's element type (float32 or float64)."""
    return getattr(bn_act_kernels(), f"{name}_{'f32' if x.dtype == torch.float32 else 'f64'}")


class _BatchNormAct(torch.autograd.Function):
    """``clamp(batch_norm(x), 0, upper)`` with batch statistics, on a channels_last tensor."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float, upper: float):
        channels = x.shape[1]
        rows = x.numel() // channels
        shift = x[0, :, 0, 0].contiguous()  # the first row of the (rows, channels) matrix
        sums = torch.empty(2, channels, dtype=torch.float64)
        if _kernel("bn_act_sums", x)(_ptr(x), None, rows, channels, _ptr(shift), None, None, upper, _ptr(sums)):
            raise MemoryError("batch norm statistics: out of memory")
        centred = sums[0] / rows
        var = (sums[1] / rows - centred * centred).clamp_(min=0)
        mean = shift.double() + centred
        invstd = torch.rsqrt(var + eps)
        scale = weight.double() * invstd
        coef = torch.stack([scale, bias.double() - mean * scale, mean]).to(x.dtype)  # scale, bias, mean
        y = torch.empty_like(x)
        _kernel("bn_act_forward", x)(_ptr(x), _ptr(y), rows, channels, _ptr(coef[0]), _ptr(coef[1]), upper)
        if running_mean is not None:  # as PyTorch: the variance is unbiased here, in double
            running_mean.copy_(momentum * mean + (1 - momentum) * running_mean.double())
            unbiased = var * rows / max(rows - 1, 1)
            running_var.copy_(momentum * unbiased + (1 - momentum) * running_var.double())
        ctx.save_for_backward(x, coef, invstd)
        ctx.upper = upper
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, coef, invstd = ctx.saved_tensors
        grad = grad.to(x.dtype).contiguous(memory_format=torch.channels_last)
        channels = x.shape[1]
        rows = x.numel() // channels
        scale, bias, mean = coef
        sums = torch.empty(2, channels, dtype=torch.float64)
        args = (_ptr(x), _ptr(grad), rows, channels, _ptr(mean), _ptr(scale), _ptr(bias), ctx.upper, _ptr(sums))
        if _kernel("bn_act_sums", x)(*args):
            raise MemoryError("batch norm backward: out of memory")
        grad_sum, grad_dot = sums  # sum(g'), sum(g' * (x - mean))
        a = scale.double()
        b = -a * grad_sum / rows
        d = -a * invstd * invstd * grad_dot / rows
        coef = torch.cat([coef, torch.stack([a, b, d]).to(x.dtype)])
        grad_x = torch.empty_like(x)
        _kernel("bn_act_backward_input", x)(_ptr(grad), _ptr(x), _ptr(grad_x), rows, channels, _ptr(coef), ctx.upper)
        grad_weight = (grad_dot * invstd).to(x.dtype)
        return grad_x, grad_weight, grad_sum.to(x.dtype), None, None, None, None, None


_ACT_UPPER = {nn.ReLU: math.inf, nn.ReLU6: 6.0}


def _has_hooks(*modules: nn.Module) -> bool:
    globals_ = (_module._global_forward_hooks, _module._global_forward_pre_hooks, _module._global_backward_hooks)
    own = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return any(globals_) or any(getattr(m, name) for m in modules for name in own)


def _fusable(bn: nn.Module, act: nn.Module, x: torch.Tensor) -> bool:
    return (
        type(bn) is BatchNorm2d
        and type(act) in _ACT_UPPER
        and bn.training
        and bn.affine
        and bn.track_running_stats
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() == 4
        and x.numel() >= FUSED_MIN_ELEMENTS
        and x.is_contiguous(memory_format=torch.channels_last)
        and bn.weight.dtype == x.dtype
        and not torch.compiler.is_compiling()
        and not _has_hooks(bn, act)
        and bn_act_kernels() is not None
    )


def batch_norm_act(bn: nn.Module, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(bn(x))``; in training, for our BatchNorm2d then ReLU/ReLU6, by the fused kernels.

    Same parameters, running statistics, ``num_batches_tracked``, values and gradients as
    the two modules (to rounding: the sums are in double); module hooks on either, autocast's
    bfloat16, NCHW tensors, small tensors and ``torch.compile`` take the modules themselves.
    """
    if not _fusable(bn, act, x):
        return act(bn(x))
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:  # nn.BatchNorm2d.forward's bookkeeping
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    upper = _ACT_UPPER[type(act)]
    return _BatchNormAct.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, momentum, bn.eps, upper)


class _DepthwiseConv(torch.autograd.Function):
    """3x3 depthwise convolution, stride 1 or 2, whose input gradient is computed as above."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride: int, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _grad_input(grad, weight, s, p, x)
        if ctx.needs_input_grad[1]:
            mask = [False, True, False]
            groups = weight.shape[0]
            grad_w = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [s, s], [p, p], [1, 1], False, [0, 0], groups, mask
            )[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0, 2, 3), dtype=torch.promote_types(grad.dtype, torch.float32)).to(grad.dtype)
        return grad_x, grad_w, grad_b, None, None


def _grad_input(grad: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, x: torch.Tensor) -> torch.Tensor:
    groups = weight.shape[0]
    if stride == 1:  # the transpose of a stride-1 correlation: the flipped kernel, padding k - 1 - p
        return F.conv2d(grad, weight.flip(2, 3), padding=2 - padding, groups=groups)
    # Stride 2, padded input coordinate t = 2i + a (a = tap 0..2): an even t = 2m gets taps
    # 0 (output m) and 2 (output m - 1), so its phase is grad correlated with [w2, w0] and
    # padded by 1 (m = 0..Ho); an odd t = 2m + 1 gets tap 1 of output m alone (m = 0..Ho-1).
    out = torch.empty_like(x)
    height, width = x.shape[2:]
    reach_h, reach_w = 2 * grad.shape[2] - padding, 2 * grad.shape[3] - padding  # last reachable row/col
    if reach_h < height - 1:
        out[:, :, reach_h + 1 :] = 0
    if reach_w < width - 1:
        out[:, :, :, reach_w + 1 :] = 0
    taps, pads = ([2, 0], [1]), (1, 0)
    for row_parity in (0, 1):
        for col_parity in (0, 1):
            kernel = weight[:, :, taps[row_parity]][:, :, :, taps[col_parity]].contiguous()
            phase = F.conv2d(grad, kernel, padding=(pads[row_parity], pads[col_parity]), groups=groups)
            src_h, dst_h = _phase_rows(row_parity, phase.shape[2], padding, height)
            src_w, dst_w = _phase_rows(col_parity, phase.shape[3], padding, width)
            out[:, :, dst_h, dst_w] = phase[:, :, src_h, src_w]
    return out


def _phase_rows(parity: int, length: int, padding: int, size: int) -> tuple[slice, slice]:
    """Phase index m sits at padded coordinate 2m + parity, i.e. unpadded row 2m + parity - padding."""
    first = max(0, (padding - parity + 1) // 2)  # the first m whose row is >= 0
    row = 2 * first + parity - padding
    count = min(length - first, (size - row + 1) // 2)
    return slice(first, first + count), slice(row, row + 2 * count - 1, 2)


def depthwise_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int
) -> torch.Tensor:
    """``F.conv2d(..., groups=channels)`` for a 3x3 kernel, stride 1 or 2, with the faster backward."""
    return _DepthwiseConv.apply(x, weight, bias, stride, padding)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (depthwise, 3x3) whose bfloat16 CPU training uses :func:`depthwise_conv2d`."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.training and torch.is_grad_enabled() and x.device.type == "cpu" and self._fast_shape():
            if torch.is_autocast_enabled("cpu"):
                dtype = torch.get_autocast_dtype("cpu")
                x, weight = x.to(dtype), weight.to(dtype)
                bias = bias.to(dtype) if bias is not None else None
            if x.dtype == torch.bfloat16 and weight.dtype == torch.bfloat16:
                return depthwise_conv2d(x, weight, bias, self.stride[0], self.padding[0])
        return super()._conv_forward(x, weight, bias)

    def _fast_shape(self) -> bool:
        return (
            self.groups == self.in_channels == self.out_channels
            and self.kernel_size == (3, 3)
            and self.dilation == (1, 1)
            and self.stride in ((1, 1), (2, 2))
            and self.padding in ((0, 0), (1, 1))
            and self.padding_mode == "zeros"
        )


class DepthwiseConv2dSame(Conv2dSame, DepthwiseConv2d):
    """A depthwise ``Conv2dSame`` (Google's models) with :class:`DepthwiseConv2d`'s kernels."""


class FusedConvBNAct(ConvBNAct):
    """``ConvBNAct`` whose batch norm and activation train through :func:`batch_norm_act`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_norm_act(self.bn, self.act, self.conv(x))
