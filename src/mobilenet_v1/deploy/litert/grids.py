"""The grids of a LiteRT int8 export: carried over, or calibrated.

Google's quantized checkpoints were trained with their quantization in the loop (Jacob
et al. 2018): every activation range and weight grid is part of the model, as after a
QAT phase of ours. The layers that still lie on such grids (all of them for Google's own
models, :func:`~mobilenet_v1.weights.grids.layers_on_grids`) keep them unchanged
(:func:`kept_grids`), so Google's model is exported the same network as Google's file,
byte for byte in its arithmetic. Every other layer gets :func:`calibrated_grids`:
min/max over calibration images for each activation (always including 0, as TFLite's
converter does) and per-tensor asymmetric min/max for each weight, the uint8 form of
Google's files that LiteRT runs on its fast XNNPACK path and the int8-exact emulation
reproduces; in an int8 file (a QAT run's per-channel grids, :mod:`.graph`), symmetric
int8 weights per output channel instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ...data.transforms import Preprocessing
from ...model import ConvBNAct, MobileNetV1
from ...weights.grids import ChannelGrid, Int8Grids, WeightGrid, input_grid, minmax_grid
from ..int8 import per_channel_steps
from .graph import Layer

__all__ = ["calibrated_grids", "kept_grids"]

CALIBRATION_BATCH = 16


def kept_grids(layers: Sequence[Layer], grids: Int8Grids, keep: Sequence[bool] | None = None) -> dict[str, WeightGrid]:
    """``grids`` (Google's own, or a QAT checkpoint's) for the layers ``keep`` names
    (:func:`~mobilenet_v1.weights.grids.layers_on_grids`; default all): the k-th layer of the
    grids is our k-th layer."""
    if len(grids.weights) != len(layers):
        raise ValueError(f"{grids.source} has {len(grids.weights)} layers, the model {len(layers)}")
    keep = [True] * len(layers) if keep is None else list(keep)
    out = {"input": grids.input} if keep[0] else {}
    for layer, w, y, kept in zip(layers, grids.weights, grids.outputs, keep, strict=True):
        if kept:
            out[layer.name], out[f"{layer.name}.weight"] = y, w
    return out


@torch.no_grad()
def calibrated_grids(
    folded: MobileNetV1,
    layers: Sequence[Layer],
    calibration: torch.Tensor,
    preprocessing: Preprocessing,
    int8: bool = False,
) -> dict[str, WeightGrid]:
    """Grids from the float activations of ``folded`` on ``calibration`` (preprocessed
    float images) and from the weights' own ranges: per tensor, or per output channel
    for an ``int8`` file."""
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
    try:
        grids: dict[str, WeightGrid] = {"input": input_grid(preprocessing)}
    except ValueError as exc:
        raise ValueError(f"{exc}; export fmt='tflite' (float) instead") from None
    for layer, (low, high) in zip(layers, ranges, strict=True):
        grids[layer.name] = minmax_grid(low, high)
        if int8:
            channels_first = torch.from_numpy(np.moveaxis(layer.weight, 3 if layer.depthwise else 0, 0))
            grids[f"{layer.name}.weight"] = ChannelGrid(tuple(per_channel_steps(channels_first).tolist()))
        else:
            grids[f"{layer.name}.weight"] = minmax_grid(float(layer.weight.min()), float(layer.weight.max()))
    return grids
