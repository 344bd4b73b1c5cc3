"""The fused batch norm + ReLU kernels give the modules' results, and step aside when they must."""

from __future__ import annotations

import copy
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.train.accel import accelerate, layers, native
from mobilenet_v1.train.accel.layers import BatchNorm2d, batch_norm_act

FUSED = "_BatchNormActBackward"
# The kernels are compiled on first use; without a C compiler the layers keep PyTorch's.
needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")
BIG = (8, 64, 32, 32)  # 2**19 elements: the smallest tensor the fused path takes


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _bn(channels: int, dtype: torch.dtype, momentum: float | None = 0.1) -> BatchNorm2d:
    gen = torch.Generator().manual_seed(3)
    bn = BatchNorm2d(channels, momentum=momentum).to(dtype)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(channels, generator=gen))  # negative scales too
        bn.bias.copy_(torch.randn(channels, generator=gen))
    return bn


def _run(bn: nn.Module, act: nn.Module, x: torch.Tensor, grad: torch.Tensor, fused: bool, steps: int = 2):
    for _ in range(steps):  # twice: the running statistics move from their start
        xi = x.detach().requires_grad_()
        out = batch_norm_act(bn, act, xi) if fused else act(bn(xi))
        out.backward(grad)
    assert (type(out.grad_fn).__name__ == FUSED) == fused
    return out, xi.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var, bn.num_batches_tracked


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_batchnorm_then_activation(dtype: torch.dtype, act: type[nn.Module], momentum: float | None) -> None:
    gen = torch.Generator().manual_seed(0)
    x = _channels_last(torch.randn(BIG, generator=gen, dtype=dtype) * 3 + 1)
    grad = _channels_last(torch.randn(BIG, generator=gen, dtype=dtype))
    ref = _bn(64, dtype, momentum)
    expected = _run(ref, act(inplace=True), x, grad, fused=False)
    got = _run(copy.deepcopy(_bn(64, dtype, momentum)), act(), x, grad, fused=True)
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    tol = {} if dtype == torch.float64 else {"atol": 1e-4, "rtol": 1e-4}
    names = ("output", "input grad", "weight grad", "bias grad", "running_mean", "running_var", "batches")
    for name, e, g in zip(names, expected, got, strict=True):
        torch.testing.assert_close(g, e, **tol, msg=lambda m, n=name: f"{n}: {m}")


@needs_compiler
def test_gradcheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "FUSED_MIN_ELEMENTS", 0)
    gen = torch.Generator().manual_seed(1)
    bn = _bn(5, torch.float64)
    x = _channels_last(torch.randn(3, 5, 4, 3, generator=gen, dtype=torch.float64)).requires_grad_()

    inputs = (x, bn.weight.detach().clone().requires_grad_(), bn.bias.detach().clone().requires_grad_())
    del bn.weight, bn.bias  # plain tensors from here on, so that gradcheck's inputs are the parameters

    def fn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        bn.weight, bn.bias = weight, bias
        out = batch_norm_act(bn, nn.ReLU6(), x)
        assert type(out.grad_fn).__name__ == FUSED
        return out

    assert torch.autograd.gradcheck(fn, inputs)


@needs_compiler
def test_model_step_equals_pytorch_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """One training step of the whole network in float64, fused and not: same loss, gradients, stats."""
    monkeypatch.setattr(layers, "FUSED_MIN_ELEMENTS", 0)  # every layer of this small input
    torch.manual_seed(0)
    model = accelerate(mobilenet_v1(alpha=0.5, num_classes=10)).double().to(memory_format=torch.channels_last)
    x = _channels_last(torch.randn(4, 3, 64, 64, dtype=torch.float64))
    y = torch.tensor([0, 3, 5, 9])
    results = []
    for native_on in (False, True):
        monkeypatch.setattr(layers, "bn_act_kernels", native.bn_act_kernels if native_on else lambda: None)
        m = copy.deepcopy(model).train()
        m.dropout.p = 0.0
        loss = F.cross_entropy(m(x), y)
        fused = 0
        stack = [loss.grad_fn]
        while stack:  # count the fused nodes in the graph
            node = stack.pop()
            fused += type(node).__name__ == FUSED
            stack += [n for n, _ in node.next_functions if n is not None]
        assert fused == (27 if native_on else 0)
        loss.backward()
        results.append((loss, [p.grad for p in m.parameters()], [b.clone() for b in m.buffers()]))
    (loss0, grads0, bufs0), (loss1, grads1, bufs1) = results
    torch.testing.assert_close(loss1, loss0)
    for g0, g1 in zip(grads0, grads1, strict=True):
        torch.testing.assert_close(g1, g0)
    for b0, b1 in zip(bufs0, bufs1, strict=True):
        torch.testing.assert_close(b1, b0)


@needs_compiler
def test_float32_input_gradient_close_to_float64() -> None:
    """Sums over 2**18 rows in float32: ours stay within 1e-6 of the float64 result (PyTorch's
    channels_last CPU kernel, at this torch version, was measured 15% off on this case)."""
    gen = torch.Generator().manual_seed(0)
    x = _channels_last(torch.randn(64, 16, 64, 64, generator=gen) * 0.3 + 0.1)
    grad = _channels_last(torch.randn(x.shape, generator=gen))
    ones, zeros = torch.ones(16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64)
    x64 = x.double().requires_grad_()
    F.relu(F.batch_norm(x64, None, None, ones, zeros, True)).backward(grad.double())
    x32 = x.clone().requires_grad_()
    batch_norm_act(BatchNorm2d(16), nn.ReLU(), x32).backward(grad)
    error = (x32.grad.double() - x64.grad).abs().max() / x64.grad.abs().max()
    assert error < 1e-6


@pytest.mark.parametrize(
    "case", ["nchw", "small", "eval", "bfloat16", "hook", "sync_bn", "leaky_relu", "no_running_stats"]
)
def test_modules_run_where_fusion_does_not_apply(case: str) -> None:
    x = torch.randn(BIG)
    bn, act = _bn(64, torch.float32), nn.ReLU()
    if case != "nchw":
        x = _channels_last(x)
    if case == "small":
        x = x[:, :, :16].contiguous(memory_format=torch.channels_last)
    elif case == "eval":
        bn.eval()
    elif case == "bfloat16":
        x, bn = x.bfloat16(), bn.bfloat16()
    elif case == "hook":
        bn.register_forward_hook(lambda module, inputs, output: None)
    elif case == "sync_bn":
        bn = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(bn))[0]
    elif case == "leaky_relu":
        act = nn.LeakyReLU()
    elif case == "no_running_stats":
        bn = BatchNorm2d(64, track_running_stats=False)
    out = batch_norm_act(bn, act, x.requires_grad_())
    assert type(out.grad_fn).__name__ != FUSED
    torch.testing.assert_close(out, act(bn(x)))


def test_disabled_or_without_compiler_returns_none_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    native._load.cache_clear()
    try:
        monkeypatch.setenv("MOBILENET_V1_NATIVE", "0")
        assert native.bn_act_kernels() is None
        assert native.kernels_summary() == (
            "CPU training kernels: PyTorch's (MOBILENET_V1_NATIVE=0; the fused C kernels train 1.2-1.5x faster)"
        )
        native._load.cache_clear()
        monkeypatch.delenv("MOBILENET_V1_NATIVE")
        monkeypatch.setenv("CC", "no-such-compiler")
        assert native.bn_act_kernels() is None
        assert "PyTorch's (no C compiler (no-such-compiler) on PATH" in native.kernels_summary()
        native._load.cache_clear()
        monkeypatch.setenv("CC", "false")  # a compiler that fails
        assert native.bn_act_kernels() is None
        assert "PyTorch's (could not build them" in native.kernels_summary()
    finally:
        native._load.cache_clear()


@needs_compiler
def test_built_once_into_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MOBILENET_V1_CACHE", str(tmp_path))
    native._load.cache_clear()
    try:
        assert native.bn_act_kernels() is not None
        assert native.kernels_summary().startswith("CPU training kernels: fused C batch norm + ReLU (built with")
        (built,) = (tmp_path / "kernels").glob("bn_act-*.so")
        stamp = built.stat().st_mtime_ns
        native._load.cache_clear()
        assert native.bn_act_kernels() is not None
        assert built.stat().st_mtime_ns == stamp  # loaded, not rebuilt
        assert [p.name for p in (tmp_path / "kernels").iterdir()] == [built.name]  # no temporary left
    finally:
        native._load.cache_clear()
