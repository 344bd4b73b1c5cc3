"""The uint8 grids of a network quantized Google's way (Jacob et al., 2018), and which
layers of a checkpoint still lie on them.

Google's quantized checkpoints carry, for each layer, a per-tensor uint8 weight grid
``s * (q - z)`` and the range of its output (learned with quantization in the loop); a
quantization-aware training phase (``train --qat-epochs``) ends with the same, its
convolutions on symmetric int8 grids per output channel (:class:`ChannelGrid`), stored in
the weights' metadata. :class:`Int8Grids` is that table, read from Google's ``.tflite``
or from the metadata; :func:`layers_on_grids` says which layers of a model still lie on
it, which every int8 export keeps (:mod:`mobilenet_v1.deploy.int8`). A layer put on a new
grid has its bias corrected for the mean error of its rounded weights
(:func:`correct_biases`: the int8 exports' calibrated layers, the start of a QAT phase).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.transforms import Preprocessing
from ..model import ConvBNAct, MobileNetV1
from ..untrusted import parse_json
from .google_tflite.reader import TFLiteTensor, read_tflite_files
from .io import LoadedWeights
from .records import WeightsRecord

__all__ = [
    "GRID_TOLERANCE",
    "ChannelGrid",
    "Grid",
    "Int8Grids",
    "bias_steps",
    "channel_steps",
    "correct_biases",
    "google_tflite",
    "input_grid",
    "int8_grids",
    "layers_on_grids",
    "minmax_grid",
    "quantized_layers",
]

GRID_TOLERANCE = 0.01  # of a step: a value this close to a grid point rounds to it in every format
MAX_CHANNELS = 1 << 16  # per-channel scales of one layer read from untrusted metadata (1.0/224: 1024)


@dataclass(frozen=True)
class Grid:
    """A uint8 grid: real value ``scale * (q - zero_point)``."""

    scale: float
    zero_point: int

    def quantize(self, values: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(values / self.scale) + self.zero_point, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ChannelGrid:
    """Symmetric int8 weight grids, one per output channel: real value ``scales[c] * q``,
    ``q`` in [-127, 127]. TFLite's int8 scheme for convolution weights, and the per-channel
    weights of ONNX Runtime and XNNPACK: a depthwise layer's channels, whose ranges differ a
    hundredfold, each get their own step."""

    scales: tuple[float, ...]

    def steps(self, ndim: int, axis: int = 0) -> np.ndarray:
        """The scales as float64, shaped to broadcast over a weight of ``ndim`` dimensions
        whose output channels lie along ``axis``."""
        shape = [1] * ndim
        shape[axis] = len(self.scales)
        return np.asarray(self.scales, np.float64).reshape(shape)

    def quantize(self, values: np.ndarray, axis: int = 0) -> np.ndarray:
        if values.shape[axis] != len(self.scales):
            raise ValueError(f"{len(self.scales)} channel scales for a weight of {values.shape[axis]} channels")
        return np.clip(np.rint(values / self.steps(values.ndim, axis)), -127, 127).astype(np.int8)


WeightGrid = Grid | ChannelGrid


def channel_steps(weight: torch.Tensor, floor: float = 2**-16) -> torch.Tensor:
    """The symmetric int8 steps of a weight per output channel (first dimension),
    ``max|w_c| / 127`` in float32; at least ``floor``, so that a channel of (nearly) zero
    weights keeps its bias within the int32 grid ``s_in * s_w``."""
    return (weight.detach().abs().flatten(1).amax(1).float() / 127).clamp_min(floor)


def bias_steps(source: Grid, weight: WeightGrid) -> np.ndarray:
    """The int32 grid of a layer's bias, ``s_in * s_w`` per output channel (one entry for a
    per-tensor weight grid), each factor rounded to float32 as TFLite's kernels take them."""
    scales = np.float32(weight.scales) if isinstance(weight, ChannelGrid) else np.float32([weight.scale])
    return np.float32(source.scale).astype(np.float64) * scales.astype(np.float64)


@dataclass(frozen=True)
class Int8Grids:
    """A network's int8 grids, Google's form: the input, then for each quantized layer
    (:func:`quantized_layers`) its weights and its output (after the activation), uint8
    per tensor; a QAT run's convolutions have per-channel weight grids. The pooled
    features keep the last convolution's output grid, as TFLite's AVERAGE_POOL_2D requires
    (and Google's files have)."""

    input: Grid
    weights: tuple[WeightGrid, ...]
    outputs: tuple[Grid, ...]
    source: str = ""
    qat_run: bool = False  # the grids a ``train --qat-epochs`` run ended with (the weights' metadata)

    @property
    def pool(self) -> Grid:
        return self.outputs[-2]

    def input_of(self, index: int) -> Grid:
        """The grid of layer ``index``'s input (whose product with its weight step is its bias step)."""
        return self.input if index == 0 else self.outputs[index - 1]

    @classmethod
    def read(cls, paths: Sequence[str | Path]) -> Int8Grids:
        """Google's quantized ``.tflite`` file (an extractor and its head are joined)."""
        source = " + ".join(map(str, paths))
        ops = read_tflite_files(list(paths))
        convs = [op for op in ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
        grid = lambda tensor: _tflite_grid(tensor, source)  # noqa: E731
        return cls(
            grid(convs[0].inputs[0]),
            tuple(grid(op.inputs[1]) for op in convs),
            tuple(grid(op.outputs[0]) for op in convs),
            source,
        )

    @property
    def per_channel(self) -> bool:
        """Whether any layer's weights have per-channel grids (an int8 LiteRT file then)."""
        return any(isinstance(w, ChannelGrid) for w in self.weights)

    def to_json(self) -> str:
        row = lambda g: {"scales": list(g.scales)} if isinstance(g, ChannelGrid) else [g.scale, g.zero_point]  # noqa: E731
        data = {
            "input": row(self.input),
            "weights": [row(g) for g in self.weights],
            "outputs": [row(g) for g in self.outputs],
        }
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str, source: str) -> Int8Grids:
        """The grids a checkpoint's metadata carries (untrusted: every value checked)."""
        data = parse_json(text, what=f"{source}: int8 grids")
        try:
            weights = [_checked_weight_grid(row) for row in data["weights"]]
            outputs = [_checked_grid(row) for row in data["outputs"]]
            first = _checked_grid(data["input"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{source}: int8 grids are not [scale, zero point] pairs (or {{'scales': [...]}} for weights)"
            ) from None
        if not weights or len(weights) != len(outputs):
            raise ValueError(f"{source}: int8 grids name {len(weights)} weights, {len(outputs)} outputs")
        if isinstance(weights[-1], ChannelGrid):
            raise ValueError(f"{source}: int8 grids give the classifier per-channel weights (one grid expected)")
        return cls(first, tuple(weights), tuple(outputs), source, qat_run=True)


def _tflite_grid(tensor: TFLiteTensor, source: str) -> Grid:
    if tensor.dtype != "uint8" or tensor.scale.size != 1:
        raise ValueError(f"{source}: tensor {tensor.name!r} is not per-tensor uint8 ({tensor.dtype}), no grid to copy")
    return Grid(float(tensor.scale[0]), int(tensor.zero_point[0]))


def _checked_weight_grid(row: object) -> WeightGrid:
    if not isinstance(row, dict):
        return _checked_grid(row)
    (key,) = row  # one key, "scales"
    scales = row["scales"]
    if key != "scales" or not isinstance(scales, list) or not 0 < len(scales) <= MAX_CHANNELS:
        raise ValueError("not a list of channel scales")
    if not all(isinstance(s, float | int) and not isinstance(s, bool) and 1e-12 < s < 1e6 for s in scales):
        raise ValueError("out of range")
    return ChannelGrid(tuple(float(s) for s in scales))


def _checked_grid(row: object) -> Grid:
    scale, zero = row  # type: ignore[misc]
    if not isinstance(scale, float | int) or not isinstance(zero, int) or isinstance(zero, bool):
        raise TypeError("not a number")
    if not (np.isfinite(scale) and 1e-12 < scale < 1e6 and 0 <= zero <= 255):
        raise ValueError("out of range")
    return Grid(float(scale), zero)


def quantized_layers(folded: MobileNetV1) -> list[torch.nn.Module]:
    """The layers an int8 export quantizes, in order: each convolution, then the classifier
    (the k-th is the k-th convolution of Google's ``.tflite``)."""
    return [m.conv for m in folded.modules() if isinstance(m, ConvBNAct)] + [folded.classifier]


def _on_grid(values: torch.Tensor, step: float | np.ndarray, zero: int, low: int, high: int) -> bool:
    q = values.detach().double() / torch.as_tensor(step, dtype=torch.float64)
    nearest = q.round()
    slack = GRID_TOLERANCE + 2**-20 * q.abs()  # float32 storage of a large integer multiple
    levels = nearest + zero
    return bool(((q - nearest).abs() <= slack).all() and levels.min() >= low and levels.max() <= high)


def layers_on_grids(folded: MobileNetV1, grids: Int8Grids) -> list[bool]:
    """For each of :func:`quantized_layers`, whether its weights lie on its weight grid
    and its bias on the int32 grid ``s_in * s_w`` (within ``GRID_TOLERANCE`` of a step):
    those layers keep their grids. ``folded`` has its batch norm folded (``fuse_bn``)."""
    layers = quantized_layers(folded)
    if len(layers) != len(grids.weights):
        raise ValueError(f"{grids.source} has {len(grids.weights)} layers, the model {len(layers)}")
    keep = []
    for index, (layer, w) in enumerate(zip(layers, grids.weights, strict=True)):
        if isinstance(w, ChannelGrid) and len(w.scales) != layer.weight.shape[0]:
            raise ValueError(
                f"{grids.source}: layer {index} has {len(w.scales)} channel scales for {layer.weight.shape[0]} channels"
            )
        on_weights = (
            _on_grid(layer.weight, w.steps(layer.weight.ndim), 0, -127, 127)
            if isinstance(w, ChannelGrid)
            else _on_grid(layer.weight, w.scale, w.zero_point, 0, 255)
        )
        keep.append(
            layer.bias is not None
            and on_weights
            and _on_grid(layer.bias, bias_steps(grids.input_of(index), w), 0, -(2**31), 2**31 - 1)
        )
    return keep


def minmax_grid(low: float, high: float) -> Grid:
    """The uint8 grid of [low, high] widened to hold 0 exactly (zero point an integer), as
    TFLite's converter and ONNX Runtime's MinMax calibration make it."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = float(np.float32(max(high - low, 1e-8) / 255))
    return Grid(scale, int(np.clip(round(-low / scale), 0, 255)))


def input_grid(preprocessing: Preprocessing) -> Grid:
    """uint8 pixels ``p`` as the preset's float input ``(p / 255 - mean) / std``: one grid,
    so one mean and one std for the three channels (Google's presets have 0.5 and 0.5)."""
    if len(set(preprocessing.mean)) != 1 or len(set(preprocessing.std)) != 1:
        raise ValueError(
            f"a uint8 input takes pixels on one grid: per-channel mean {preprocessing.mean} / "
            f"std {preprocessing.std} cannot be one"
        )
    mean, std = preprocessing.mean[0], preprocessing.std[0]
    return Grid(float(np.float32(1 / (255 * std))), int(np.clip(round(255 * mean), 0, 255)))


def int8_grids(loaded: LoadedWeights, quantization: str = "auto") -> Int8Grids | None:
    """The grids an int8 export carries over to the layers that still lie on them
    (:func:`layers_on_grids`): a QAT checkpoint's own (its ``int8_grids``
    metadata), Google's quantized file behind ``loaded`` or behind the Google checkpoint
    it was fine-tuned from (``auto``, ``tflite``; ``auto`` gives none when that file is not
    on this machine), or none (``calibrated``; ``tflite`` raises when there is none)."""
    if quantization not in ("auto", "calibrated", "tflite"):
        raise ValueError(f"unknown quantization {quantization!r}; choose from auto, calibrated, tflite")
    if quantization == "calibrated":
        return None
    if "int8_grids" in loaded.metadata:
        return Int8Grids.from_json(loaded.metadata["int8_grids"], "the weights' metadata")
    files = google_tflite(loaded)
    origin = _trained_from(loaded)
    if not files and origin is not None and origin.quantized:
        try:
            files = origin.files(download=False)
        except FileNotFoundError:
            if quantization == "tflite":
                raise
    if quantization == "tflite" and not files:
        raise ValueError("quantization='tflite' needs Google's quantized .tflite weights, or weights tuned from them")
    return Int8Grids.read(files) if files else None


def google_tflite(loaded: LoadedWeights) -> list[Path]:
    """Google's quantized ``.tflite`` file(s) these weights were read from (none for other
    weights): what ``google-tflite-int8`` runs."""
    record = loaded.record
    return record.files(download=False) if record is not None and record.quantized else list(loaded.tflite_files)


def _trained_from(loaded: LoadedWeights) -> WeightsRecord | None:
    """The registry record of the Google checkpoint a fine-tune started from, if any."""
    name = loaded.metadata.get("trained_from", "")
    from .registry import get_weights  # the registry builds on this package's loaders

    try:
        return get_weights(name).value
    except (KeyError, ValueError):
        return None


@torch.no_grad()
def correct_biases(
    folded: MobileNetV1,
    calibration: torch.Tensor,
    quantize_weight: Callable[[torch.Tensor], torch.Tensor],
    layers: Sequence[bool],
) -> MobileNetV1:
    """Empirical bias correction (Nagel et al., 2019, "Data-Free Quantization", Section 4.2):
    a copy of ``folded`` in which each layer ``layers`` names has its bias lowered by the
    mean shift its rounded weights cause, ``E[(W_q - W) x]`` per output channel over the
    calibration images (``quantize_weight`` is the format's weight grid). Rounding a
    depthwise layer's weights on one per-tensor grid shifts some channels' outputs by a
    large fraction of their range; the mean part of that error is removed for free."""
    corrected = copy.deepcopy(folded)
    modules = quantized_layers(folded)
    sums: list[torch.Tensor | None] = [None] * len(modules)
    counts = [0] * len(modules)

    inside = [False]  # the hook's own call of the layer (on the weight error) is not observed

    def observe(index: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple) -> None:
            if inside[0]:
                return
            error = quantize_weight(module.weight) - module.weight
            inside[0] = True
            try:
                y = torch.func.functional_call(module, {"weight": error, "bias": torch.zeros_like(module.bias)}, args)
            finally:
                inside[0] = False
            dims = (0,) if y.ndim == 2 else (0, 2, 3)
            total = y.sum(dims)
            sums[index] = total if sums[index] is None else sums[index] + total
            counts[index] += y.numel() // y.shape[1]

        return hook

    handles = [m.register_forward_pre_hook(observe(i)) for i, m in enumerate(modules) if layers[i]]
    try:
        for batch in calibration.float().split(16):
            folded(batch)
    finally:
        for handle in handles:
            handle.remove()
    for module, total, count in zip(quantized_layers(corrected), sums, counts, strict=True):
        if total is not None:
            module.bias -= total / count
    return corrected
