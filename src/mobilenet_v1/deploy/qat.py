"""Quantization-aware fine-tuning (QAT) for the calibrated int8 ONNX export.

Post-training quantization (:func:`~mobilenet_v1.deploy.quantize.quantize_onnx`, calibrated
mode) rounds weights and activations that were never trained to be rounded and loses up
to 0.84 pt of Imagenette top-1 (docs/deployment.md). Google trained its quantized
models with fake quantization in the loop (Jacob et al., 2018); this module does a short
version of that for any checkpoint: a few hundred steps of self-distillation on the
calibration images, with fake quantization that mirrors what ONNX Runtime's static QDQ
quantization will do to the BN-folded graph:

* weights of every quantized Conv and of the classifier (Gemm): int8 per output
  channel, symmetric, ``scale = max|w| / 127`` recomputed each step;
* activations: uint8 per tensor, asymmetric, from min/max ranges measured once on the
  images (ORT's MinMax calibration) and then kept fixed. As in ORT's graph: the input of
  the first quantized conv, the output of each quantized conv (after its ReLU/ReLU6),
  the pooled features and the logits.

The first ``float_layers`` convolutions stay float, as in ``quantize_onnx``. The loss is
the KL divergence to the original float model's softmax on the same (randomly flipped)
images, so no labels are needed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..fold import fuse_bn
from ..model import ConvBNAct, MobileNetV1
from ..weights.grids import channel_steps

__all__ = ["qat_finetune"]


class _FakeQuantWeight(nn.Module):
    """Parametrization: symmetric int8 per output channel, as ORT's ``WeightSymmetric``
    per-channel weights (grid [-127, 127]); gradients pass straight through."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = channel_steps(w, floor=1e-12)
        zero = torch.zeros(len(w), dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)


class _FakeQuantActivation:
    """Forward hook: records min/max while observing, then fake-quantizes to uint8 with
    those fixed ranges (ORT's MinMax: the range always includes 0)."""

    def __init__(self) -> None:
        self.low, self.high, self.observing = 0.0, 0.0, True
        self.handle: torch.utils.hooks.RemovableHandle | None = None

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.low, self.high = min(self.low, float(output.min())), max(self.high, float(output.max()))
            return output
        scale = max(self.high - self.low, 1e-8) / 255
        zero = round(-self.low / scale)
        return torch.fake_quantize_per_tensor_affine(output, scale, zero, 0, 255)


def _instrument(model: MobileNetV1, float_layers: int) -> list[_FakeQuantActivation]:
    """Put fake quantization where ORT puts Q/DQ nodes; returns the activation hooks."""
    layers = [m for m in model.features.modules() if isinstance(m, ConvBNAct)]
    taps: list[nn.Module] = [m.act for m in layers[max(float_layers - 1, 0) :]] + [model.classifier]
    for layer in layers[float_layers:]:
        parametrize.register_parametrization(layer.conv, "weight", _FakeQuantWeight())
    parametrize.register_parametrization(model.classifier, "weight", _FakeQuantWeight())
    hooks = [_FakeQuantActivation() for _ in taps]
    for tap, hook in zip(taps, hooks, strict=True):
        hook.handle = tap.register_forward_hook(hook)
    inputs = [model.classifier]  # the pooled features
    if float_layers == 0:  # the network input itself is quantized then
        inputs.append(model.features)
    for module in inputs:
        hooks.append(_quantize_input(module))
    return hooks


def _quantize_input(module: nn.Module) -> _FakeQuantActivation:
    hook = _FakeQuantActivation()
    hook.handle = module.register_forward_pre_hook(lambda m, args: (hook(m, (), args[0]),))
    return hook


def _distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per image: match the float model's whole softmax."""
    return F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), log_target=True, reduction="batchmean")


def qat_finetune(
    model: MobileNetV1,
    images: torch.Tensor,
    *,
    steps: int = 200,
    lr: float = 1e-5,
    batch_size: int = 16,
    float_layers: int = 2,
    flip: bool = True,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> MobileNetV1:
    """A BN-folded copy of ``model`` fine-tuned for int8 with fake quantization (see above).

    ``images`` are preprocessed calibration images (N, 3, H, W), e.g. from
    :func:`~mobilenet_v1.deploy.quantize.load_batch`; ``on_step(step, loss)`` sees each step's
    distillation loss. ``model`` is left untouched. The returned model's weights lie on
    the int8 grids ORT will pick, so ``quantize_onnx`` of its export reproduces them.
    """
    if steps < 0 or batch_size < 1 or lr <= 0 or float_layers < 0:
        raise ValueError(
            f"QAT needs steps >= 0, batch_size >= 1, lr > 0 and float_layers >= 0, "
            f"got {steps}, {batch_size}, {lr}, {float_layers}"
        )
    teacher, student = fuse_bn(model).requires_grad_(False), fuse_bn(model).requires_grad_(True)
    hooks = _instrument(student, float_layers)
    with torch.no_grad():  # ORT calibrates on the float graph: ranges from float activations
        for batch in images.split(batch_size):
            student(batch)
    for hook in hooks:
        hook.observing = False
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        batch = images[torch.randperm(len(images), generator=generator)[:batch_size]]
        if flip:
            mirror = torch.rand(len(batch), generator=generator) < 0.5
            batch = torch.where(mirror[:, None, None, None], batch.flip(-1), batch)
        with torch.no_grad():
            target = teacher(batch)
        loss = _distillation_loss(student(batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step, loss.item())
    return _finalize(student, hooks)


def _finalize(student: MobileNetV1, hooks: list[_FakeQuantActivation]) -> MobileNetV1:
    """Plain modules again: weights kept on their int8 grids, hooks removed."""
    for hook in hooks:
        hook.handle.remove()
    for module in student.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return student.requires_grad_(False).eval()
