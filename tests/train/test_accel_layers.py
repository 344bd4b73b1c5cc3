"""The CPU training layers give PyTorch's results: values, gradients, running stats."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.train.accel import accelerate
from mobilenet_v1.train.accel.layers import (
    BatchNorm2d,
    DepthwiseConv2d,
    DepthwiseConv2dSame,
    FusedConvBNAct,
    depthwise_conv2d,
)


def _channels_last(x: torch.Tensor, on: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if on else x.contiguous()


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(
    ("size", "stride", "padding"),
    [((8, 9), 1, 1), ((8, 8), 2, 1), ((9, 7), 2, 1), ((9, 9), 2, 0), ((8, 10), 2, 0), ((5, 5), 1, 0)],
)
def test_depthwise_gradients_match_conv2d(
    size: tuple[int, int], stride: int, padding: int, channels_last: bool
) -> None:
    gen = torch.Generator().manual_seed(0)
    x = _channels_last(torch.randn(2, 5, *size, generator=gen, dtype=torch.float64), channels_last)
    weight = torch.randn(5, 1, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(5, generator=gen, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (x, weight, bias)]
    ref = F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=5)
    ours = depthwise_conv2d(x, weight, bias, stride, padding)
    torch.testing.assert_close(ours, ref)
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    expected = torch.autograd.grad(ref, leaves, grad)
    got = torch.autograd.grad(ours, leaves, grad)
    for name, e, g in zip(("input", "weight", "bias"), expected, got, strict=True):
        torch.testing.assert_close(g, e, msg=lambda m, n=name: f"{n} gradient: {m}")


def test_depthwise_gradcheck() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 1, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w: depthwise_conv2d(a, w, None, 2, 1), (x, weight))


def _grads(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    out.backward(grad.to(out.dtype))
    return out, x.grad, module.weight.grad


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_module_in_bf16_autocast(stride: int) -> None:
    torch.manual_seed(0)
    ref = nn.Conv2d(16, 16, 3, stride=stride, padding=1, groups=16)
    ours = DepthwiseConv2d(16, 16, 3, stride=stride, padding=1, groups=16)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 16, 12, 12).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(4, 16, 12 // stride, 12 // stride)
    out, gx, gw = _grads(ours, x, grad)
    assert out.dtype == torch.bfloat16 and "DepthwiseConv" in type(out.grad_fn).__name__  # the fast path ran
    for a, b in zip((out, gx, gw), _grads(ref, x, grad), strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=0.05, rtol=0.02)


def test_depthwise_module_keeps_pytorch_kernels_otherwise() -> None:
    conv = DepthwiseConv2d(4, 4, 3, padding=1, groups=4)
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    assert "DepthwiseConv" not in type(conv(x).grad_fn).__name__  # float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "DepthwiseConv" not in type(conv.eval()(x).grad_fn).__name__  # eval mode


def test_thin_batchnorm_matches_pytorch_on_channels_last() -> None:
    torch.manual_seed(0)
    ref, ours = nn.BatchNorm2d(8), BatchNorm2d(8)
    x = (torch.randn(4, 8, 10, 10) * 3 + 1).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(4, 8, 10, 10)
    results = []
    for bn in (ref, ours):
        xi = x.detach().requires_grad_()
        out = bn(xi)
        out.backward(grad)
        results.append((out, xi.grad, bn.weight.grad, bn.running_mean, bn.running_var))
    assert results[1][0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_accelerate_swaps_the_layers_and_keeps_the_state_dict() -> None:
    plain = mobilenet_v1(alpha=0.25)
    assert {type(m) for m in plain.modules()}.isdisjoint({BatchNorm2d, DepthwiseConv2d, FusedConvBNAct})
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    model = accelerate(plain)
    kinds = {type(m) for m in model.modules()}
    assert {BatchNorm2d, DepthwiseConv2d, FusedConvBNAct} <= kinds
    assert all(isinstance(m, BatchNorm2d) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    pointwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert pointwise and all(type(m) is nn.Conv2d for m in pointwise)  # only depthwise 3x3 convs swap
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    google = accelerate(mobilenet_v1(alpha=0.25, num_classes=1001, activation="relu6", padding="same", folded_bn=True))
    assert DepthwiseConv2dSame in {type(m) for m in google.modules()}
    x = torch.randn(2, 3, 64, 64)
    reference = mobilenet_v1(alpha=0.25).eval()
    reference.load_state_dict(state)
    torch.testing.assert_close(model.eval()(x), reference(x))
