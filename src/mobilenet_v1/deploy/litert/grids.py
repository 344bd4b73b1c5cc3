"""The uint8 grids of a LiteRT int8 export: Google's own, or calibrated.

Google's quantized checkpoints were trained with their quantization in the loop (Jacob
et al. 2018): every activation range and weight grid is part of the model. When the
weights came from such a file, :func:`google_grids` carries all of them over unchanged,
so the export is the same network as Google's file, byte for byte in its arithmetic.
Any other checkpoint gets :func:`calibrated_grids`: min/max over calibration images for
each activation (always including 0, as TFLite's converter does) and per-tensor
asymmetric min/max for each weight, the uint8 form of Google's files that LiteRT runs
on its fast XNNPACK path and the int8-exact emulation reproduces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ...data.transforms import Preprocessing
from ...model import ConvBNAct, MobileNetV1
from ...weights.google_tflite.reader import TFLiteTensor, read_tflite_files
from .graph import Grid, Layer

__all__ = ["calibrated_grids", "google_grids", "input_grid"]

CALIBRATION_BATCH = 16


def _grid(tensor: TFLiteTensor, source: str) -> Grid:
    if tensor.dtype != "uint8" or tensor.scale.size != 1:
        raise ValueError(f"{source}: tensor {tensor.name!r} is not per-tensor uint8 ({tensor.dtype}), no grid to copy")
    return Grid(float(tensor.scale[0]), int(tensor.zero_point[0]))


def google_grids(layers: Sequence[Layer], paths: Sequence[str | Path]) -> dict[str, Grid]:
    """Every grid of Google's quantized ``.tflite`` (an extractor and its head are joined):
    the k-th convolution of the file is our k-th layer, its weight shape checked."""
    source = " + ".join(map(str, paths))
    ops = read_tflite_files(list(paths))
    convs = [op for op in ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    if len(convs) != len(layers):
        raise ValueError(f"{source} has {len(convs)} convolutions, the model {len(layers)}: not the same network")
    grids = {"input": _grid(convs[0].inputs[0], source)}
    for layer, op in zip(layers, convs, strict=True):
        if op.inputs[1].shape != layer.weight.shape:
            raise ValueError(f"{source}: {layer.name} weight {op.inputs[1].shape}, the model's {layer.weight.shape}")
        grids[layer.name] = _grid(op.outputs[0], source)
        grids[f"{layer.name}.weight"] = _grid(op.inputs[1], source)
    return grids


def minmax_grid(low: float, high: float) -> Grid:
    """The uint8 grid of [low, high] widened to hold 0 exactly (zero point an integer)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = float(np.float32(max(high - low, 1e-8) / 255))
    return Grid(scale, int(np.clip(round(-low / scale), 0, 255)))


def input_grid(preprocessing: Preprocessing) -> Grid:
    """uint8 pixels ``p`` as the preset's float input ``(p / 255 - mean) / std``: one grid,
    so one mean and one std for the three channels (Google's presets have 0.5 and 0.5)."""
    if len(set(preprocessing.mean)) != 1 or len(set(preprocessing.std)) != 1:
        raise ValueError(
            f"a LiteRT int8 model takes uint8 pixels on one grid: per-channel mean {preprocessing.mean} / "
            f"std {preprocessing.std} cannot be one; export fmt='tflite' (float) instead"
        )
    mean, std = preprocessing.mean[0], preprocessing.std[0]
    return Grid(float(np.float32(1 / (255 * std))), int(np.clip(round(255 * mean), 0, 255)))


@torch.no_grad()
def calibrated_grids(
    folded: MobileNetV1, layers: Sequence[Layer], calibration: torch.Tensor, preprocessing: Preprocessing
) -> dict[str, Grid]:
    """Grids from the float activations of ``folded`` on ``calibration`` (preprocessed
    float images) and from the weights' own ranges."""
    modules = [m for m in folded.features.modules() if isinstance(m, ConvBNAct)] + [folded.classifier]
    if len(modules) != len(layers):
        raise ValueError(f"the model has {len(modules)} layers, the graph {len(layers)}")
    ranges = [[0.0, 0.0] for _ in modules]

    def observe(index: int) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
            ranges[index][0] = min(ranges[index][0], float(out.min()))
            ranges[index][1] = max(ranges[index][1], float(out.max()))

        return hook

    handles = [m.register_forward_hook(observe(i)) for i, m in enumerate(modules)]
    try:
        for batch in calibration.float().split(CALIBRATION_BATCH):
            folded(batch)
    finally:
        for handle in handles:
            handle.remove()
    grids = {"input": input_grid(preprocessing)}
    for layer, (low, high) in zip(layers, ranges, strict=True):
        grids[layer.name] = minmax_grid(low, high)
        grids[f"{layer.name}.weight"] = minmax_grid(float(layer.weight.min()), float(layer.weight.max()))
    return grids
