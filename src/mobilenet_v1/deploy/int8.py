"""The int8 recipe every int8 format shares: whose grids each layer is quantized on.

Google's quantized checkpoints were trained with quantization in the loop (Jacob et al.,
2018): each layer's weights lie on a per-tensor uint8 grid ``s * (q - z)`` and its output
range was learned with them (:class:`~mobilenet_v1.weights.grids.Int8Grids`, read from the ``.tflite`` file). A
quantization-aware training phase (``train --qat-epochs``) ends the same way, its grids
stored with the weights. A checkpoint fine-tuned from Google's weights often leaves most
layers untouched (the classifier-only fine-tune of small data, Section 4.6's use as a
backbone), and those are still the layers trained for int8. The recipe, the same for
``onnx-int8``, ``tflite-int8`` and ``executorch-int8``:

* a layer whose weights and bias still lie on its grids (to within 1% of a step,
  :func:`~mobilenet_v1.weights.grids.layers_on_grids`) keeps them and its output range: all of them for Google's own
  models and for a QAT checkpoint, whose int8 file then computes what the QAT model did;
* every other layer is calibrated: its output range is the min/max over calibration
  images of the float model, its weights take the format's own grid (per output channel,
  symmetric, where the format has it: ONNX Runtime and XNNPACK; per tensor in LiteRT's
  uint8 files), and its bias is corrected for the mean error of those rounded weights
  (:func:`~mobilenet_v1.weights.grids.correct_biases`).

On 4 Imagenette classes x 120 photos (the classifier-only fine-tune of 0.25/128), keeping
the backbone's grids takes top-1 agreement with the float model from 97.8-98.2% (every
layer calibrated) to over 99% in each format; after the whole-network fine-tune of
0.25/128 on Imagenette, bias correction takes ``tflite-int8`` from 1.56 pt below float
to 0.44 (docs/deployment.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..fold import fuse_bn
from ..model import MobileNetV1
from ..weights.grids import ChannelGrid, Int8Grids, WeightGrid, channel_steps, layers_on_grids, minmax_grid

__all__ = [
    "check_qat_grids",
    "grids_used",
    "int8_weight_steps",
    "per_channel_int8",
    "per_channel_steps",
    "per_tensor_uint8",
    "pixel_shift",
]


def check_qat_grids(model: MobileNetV1, grids: Int8Grids | None, qat_steps: int) -> None:
    """Quantization-aware fine-tuning at export moves every weight off its grid: refused
    while layers still carry trained int8 grids, unless the caller asked for none."""
    if qat_steps and grids is not None:
        kept = sum(layers_on_grids(fuse_bn(model), grids))
        if kept:
            raise ValueError(
                f"qat_steps={qat_steps}: {kept} layers carry Google's own QAT int8 grids, which fine-tuning would "
                "move; quantization='calibrated' to fine-tune anyway"
            )


def grids_used(keep: Sequence[bool]) -> str:
    """What an int8 file's metadata says of its grids: ``tflite`` (all carried over),
    ``calibrated`` (none), or ``tflite K/N+calibrated``."""
    if keep and all(keep):
        return "tflite"
    return f"tflite {sum(keep)}/{len(keep)}+calibrated" if any(keep) else "calibrated"


def pixel_shift(grids: Int8Grids | None, keep: Sequence[bool]) -> float:
    """How far ONNX Runtime and XNNPACK move a float input down before quantizing it on
    its kept grid (0 when it is calibrated): a quarter step. With the presets' grid (zero
    point 128, step ``2/255``) the input ``(p/255 - 0.5) / 0.5`` falls halfway between two
    grid points, where their round-half-to-even takes every other pixel value up a step; a
    quarter step down quantizes it to the pixel ``p`` itself, the input of LiteRT's uint8
    files and of the QAT model (0.25/128 on Imagenette: 0.3 pt in each format)."""
    return grids.input.scale / 4 if grids is not None and keep and keep[0] else 0.0


def int8_weight_steps(grid: WeightGrid, values: np.ndarray) -> np.ndarray:
    """A weight grid as per-output-channel *symmetric* int8 steps (zero point 0), the form
    ONNX Runtime's and XNNPACK's fast int8 kernels take: a :class:`ChannelGrid`'s own; for
    a per-tensor uint8 grid ``s * (q - z)``, ``s`` for a channel whose steps ``q - z`` all
    lie in [-127, 127] (exact), ``s * max|q - z| / 127`` for a channel reaching further.
    ``values`` are the weights on the grid, output channels first."""
    if isinstance(grid, ChannelGrid):
        if len(grid.scales) != len(values):
            raise ValueError(f"{len(grid.scales)} channel scales for a weight of {len(values)} channels")
        return np.asarray(grid.scales, np.float32)
    reach = np.abs(np.rint(values / grid.scale)).reshape(len(values), -1).max(axis=1)
    return np.where(reach <= 127, grid.scale, grid.scale * reach / 127).astype(np.float32)


def per_tensor_uint8(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` on its per-tensor asymmetric uint8 min/max grid (LiteRT's uint8 files)."""
    grid = minmax_grid(float(weight.min()), float(weight.max()))
    return (torch.clamp(torch.round(weight / grid.scale) + grid.zero_point, 0, 255) - grid.zero_point) * grid.scale


def per_channel_steps(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 steps per output channel (first dimension), ``max|w| / 127`` (ONNX
    Runtime's and XNNPACK's quantizers, LiteRT's int8 files)."""
    return channel_steps(weight, floor=2**-12)


def per_channel_int8(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` on its symmetric int8 grids per output channel (:func:`per_channel_steps`)."""
    shape = (-1,) + (1,) * (weight.ndim - 1)
    scale = per_channel_steps(weight).view(shape)
    return torch.clamp(torch.round(weight / scale), -127, 127) * scale
