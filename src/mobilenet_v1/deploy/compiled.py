"""A fast PyTorch-native CPU inference path.

Deployment does not need ONNX: :func:`compile_for_inference` folds batch norm into the
convolutions (as in Google's models), switches to ``channels_last`` (oneDNN's preferred
layout for depthwise and 1x1 convolutions), and compiles the result with
``torch.compile`` and Inductor's *freezing*, which treats the weights as constants:
conv + bias + ReLU6 are fused and weights are pre-packed for oneDNN. Call the result
under ``torch.inference_mode()``. ``backend="jit"`` is the older TorchScript route
(``torch.jit.freeze`` + ``optimize_for_inference``), without a compile step.
``dtype=torch.bfloat16`` runs weights and activations in bfloat16 (oneDNN's AMX / AVX-512
BF16 kernels where the CPU has them; logits are returned in float32).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..fold import fuse_bn
from ..model import MobileNetV1

__all__ = ["BACKENDS", "compile_for_inference"]

BACKENDS = ("inductor", "jit", "eager")


def _inductor(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    import torch._inductor.config as inductor_config

    # Freezing turns parameters into constants so Inductor can fold and pre-pack them.
    inductor_config.freezing = True
    return torch.compile(model, backend="inductor", dynamic=False)


def _jit(model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    with torch.no_grad():
        traced = torch.jit.trace(model, example.contiguous(memory_format=torch.channels_last))
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def compile_for_inference(
    model: MobileNetV1, resolution: int = 224, *, backend: str = "inductor", dtype: torch.dtype = torch.float32
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return a callable ``x -> logits`` optimised for CPU inference of ``model``.

    The model is copied with BN folded and put in eval mode, so ``model`` itself is left
    untouched. The first call of the ``inductor`` backend compiles (tens of seconds on a
    small CPU); each new batch size recompiles once. All models share one ``forward``, and
    ``torch.compile`` recompiles it at most 8 times per process before falling back to
    eager: to compile many models in one process, call ``torch._dynamo.reset()`` between.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"unsupported inference dtype {dtype}; choose torch.float32 or torch.bfloat16")
    folded = fuse_bn(model).eval().to(dtype=dtype, memory_format=torch.channels_last)
    for p in folded.parameters():
        p.requires_grad_(False)
    if backend == "inductor":
        forward = _inductor(folded)
    elif backend == "jit":
        forward = _jit(folded, torch.randn(1, 3, resolution, resolution, dtype=dtype))
    else:
        forward = folded

    def run(x: torch.Tensor) -> torch.Tensor:
        return forward(x.to(dtype).contiguous(memory_format=torch.channels_last)).float()

    return run
