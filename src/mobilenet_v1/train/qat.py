"""Quantization-aware training: the last epochs of a run with int8 arithmetic in the loop.

Google trained its quantized MobileNets with fake quantization (Jacob et al., 2018): the
forward pass rounds weights and activations to the grids the int8 model will use, the
backward pass goes straight through the rounding, and the network learns weights and
ranges that survive it. ``train --qat-epochs N`` does this for the last N epochs of a run,
on the grids every int8 export keeps (:mod:`mobilenet_v1.weights.grids`):

* weights: each convolution on symmetric int8 grids per output channel, step
  ``max|w_c| / 127`` (:class:`~mobilenet_v1.weights.grids.ChannelGrid`: TFLite's int8
  scheme, ONNX Runtime's and XNNPACK's per-channel weights; one grid per tensor cannot
  follow depthwise channels whose ranges differ a hundredfold), the classifier on one
  symmetric grid (uint8 zero point 128); a layer that still lies on the grids of the
  Google checkpoint the run started from (all but the classifier after a classifier-only
  fine-tune) keeps those, and its output range, fixed;
* biases: the int32 grid ``s_in * s_w`` of the layer's input and weight steps (per channel);
* activations: the input as the uint8 pixels it came from; each layer's output after its ReLU6
  and the logits, uint8 per tensor on
  the min/max grid (zero included) of an exponential moving average of the batches'
  ranges, fixed in evaluation; the pooled features keep the last layer's grid.

The ranges are buffers of the model (saved in checkpoints, broadcast under DDP), so a
resumed run continues exactly. The saved weights (:func:`finalize`) lie on their grids and
carry them (the ``int8_grids`` metadata), so that ``export`` to any int8 format keeps
every layer's grids and computes what the QAT model computed in its last evaluation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..data.transforms import Preprocessing
from ..model import ConvBNAct, MobileNetV1
from ..weights.grids import (
    ChannelGrid,
    Grid,
    Int8Grids,
    WeightGrid,
    channel_steps,
    correct_biases,
    input_grid,
    layers_on_grids,
    minmax_grid,
    quantized_layers,
)

__all__ = ["RANGES", "Ranges", "check_model", "finalize", "instrument", "is_instrumented"]

RANGES = "qat_ranges"  # the model's attribute holding the activation ranges
MOMENTUM = 0.05  # of the moving average of each batch's min/max


class ActivationRange(nn.Module):
    """The moving min/max of one activation and its fake quantization on that grid; a
    range started from a trained grid (:meth:`fix`) stays where it is."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("low", torch.zeros((), dtype=torch.float64))
        self.register_buffer("high", torch.zeros((), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("fixed", torch.zeros((), dtype=torch.bool))

    def fix(self, grid: Grid) -> None:
        self.low.fill_(-grid.scale * grid.zero_point), self.high.fill_(grid.scale * (255 - grid.zero_point))
        self.seen.fill_(True), self.fixed.fill_(True)

    def observe(self, x: torch.Tensor) -> None:
        low, high = x.detach().min().double(), x.detach().max().double()
        if not bool(self.seen):
            self.low.copy_(low), self.high.copy_(high), self.seen.fill_(True)
        else:
            self.low.lerp_(low, MOMENTUM), self.high.lerp_(high, MOMENTUM)

    def grid(self) -> Grid:
        return minmax_grid(float(self.low), float(self.high))

    def forward(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if not bool(self.fixed) and (training or not bool(self.seen)):
            self.observe(x)
        return fake_quantize(x, self.grid())


def fake_quantize(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """``x`` rounded to the uint8 ``grid``, gradients straight through inside its range."""
    return torch.fake_quantize_per_tensor_affine(x.float(), grid.scale, grid.zero_point, 0, 255).to(x.dtype)


def weight_grid(weight: torch.Tensor) -> WeightGrid:
    """A weight's symmetric grid: per output channel for a convolution
    (:func:`channel_steps`), one per tensor for the classifier (step ``max|w| / 127``,
    zero point 128)."""
    if weight.ndim == 4:
        return ChannelGrid(tuple(channel_steps(weight).tolist()))
    return Grid(float(np.float32(max(float(weight.detach().abs().max()), 1e-12) / 127)), 128)


class _WeightOnGrid(nn.Module):
    """The weight on its symmetric grid (:func:`weight_grid`), or on a fixed trained ``grid``."""

    def __init__(self, grid: WeightGrid | None = None) -> None:
        super().__init__()
        self.fixed = grid

    def grid(self, weight: torch.Tensor) -> WeightGrid:
        return self.fixed if self.fixed is not None else weight_grid(weight)

    def steps(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight's step, per output channel for a convolution (float32)."""
        if self.fixed is None:
            return channel_steps(weight) if weight.ndim == 4 else torch.tensor([self.grid(weight).scale])
        if isinstance(self.fixed, ChannelGrid):
            return torch.tensor(self.fixed.scales, dtype=torch.float32)
        return torch.tensor([self.fixed.scale], dtype=torch.float32)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if isinstance(self.fixed, Grid) or (self.fixed is None and weight.ndim != 4):
            grid = self.grid(weight)
            return torch.fake_quantize_per_tensor_affine(weight, grid.scale, grid.zero_point, 0, 255)
        steps = self.steps(weight).to(weight.device)
        zeros = torch.zeros_like(steps, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, steps, zeros, 0, -127, 127)


class _BiasOnGrid(nn.Module):
    """Rounds a bias to ``s_in * s_w`` per output channel (as TFLite's kernels compute it,
    from float32 steps)."""

    def __init__(self, layer: nn.Module, input_grid: Grid | ActivationRange) -> None:
        super().__init__()
        self.layer = [layer]  # not a submodule: the layer owns this parametrization
        self.input = input_grid if isinstance(input_grid, Grid) else [input_grid]

    def step(self) -> torch.Tensor:
        source = self.input if isinstance(self.input, Grid) else self.input[0].grid()
        weight = self.layer[0].parametrizations.weight
        return np.float32(source.scale).item() * weight[0].steps(weight.original).double()

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        step = self.step().to(bias.device)
        return bias + ((bias.detach().double() / step).round() * step - bias.detach()).to(bias.dtype)


def is_instrumented(model: MobileNetV1) -> bool:
    return hasattr(model, RANGES)


class Ranges(nn.Module):
    """The activation ranges of an instrumented model, and which layers keep trained grids."""

    def __init__(self, count: int, kept: Sequence[bool]) -> None:
        super().__init__()
        self.ranges = nn.ModuleList(ActivationRange() for _ in range(count))
        self.register_buffer("kept", torch.tensor(list(kept), dtype=torch.bool))


def check_model(model: MobileNetV1, preprocessing: Preprocessing) -> None:
    """What fake quantization needs: folded batch norm (the exported arithmetic is the
    folded layer's; trained weights are folded as the run starts, a network from scratch
    has its batch norm still to learn) and one input grid for the three channels."""
    if not model.config.folded_bn:
        raise ValueError(
            "qat_epochs needs trained weights to start from: a network from scratch has its batch norm still to "
            "learn; train it first, then start the quantization-aware run from its model-final.safetensors"
        )
    try:
        input_grid(preprocessing)
    except ValueError as exc:
        raise ValueError(f"qat_epochs: {exc}") from None


def instrument(
    model: MobileNetV1,
    preprocessing: Preprocessing,
    grids: Int8Grids | None = None,
    kept: Sequence[bool] | None = None,
    calibration: torch.Tensor | None = None,
) -> None:
    """Put fake quantization into ``model`` (in place): weight and bias parametrizations,
    and a hook after each layer. The layers that lie on ``grids`` (the starting weights'
    int8 grids, :func:`~mobilenet_v1.weights.grids.int8_grids`; ``kept`` when resuming:
    the choice the phase made at its start) keep them; the others first have their biases
    corrected on the ``calibration`` images (float input) for the mean error of their
    rounded weights. Needs folded batch norm (Google's checkpoints have it): the exported
    arithmetic is the folded layer's."""
    check_model(model, preprocessing)
    pixels = input_grid(preprocessing)
    layers = [m for m in model.modules() if isinstance(m, ConvBNAct)]
    convs = quantized_layers(model)
    if kept is None:
        kept = layers_on_grids(model, grids) if grids is not None else [False] * len(convs)
    if calibration is not None:
        _correct_biases(model, calibration, kept)
    container = Ranges(len(convs), kept)  # each layer's output, the classifier's the logits
    setattr(model, RANGES, container)
    ranges = container.ranges
    inputs: list[Grid | ActivationRange] = [pixels, *ranges[: len(layers)]]
    for index, (conv, source) in enumerate(zip(convs, [*inputs[: len(layers)], ranges[len(layers) - 1]], strict=True)):
        fixed = grids.weights[index] if kept[index] and grids is not None else None
        if fixed is not None:
            ranges[index].fix(grids.outputs[index])
        parametrize.register_parametrization(conv, "weight", _WeightOnGrid(fixed))
        parametrize.register_parametrization(conv, "bias", _BiasOnGrid(conv, source))
    layers[0].register_forward_pre_hook(lambda m, args: (_as_pixels(args[0], preprocessing, pixels),))
    for layer, activation in zip(layers, ranges, strict=False):
        layer.register_forward_hook(_output_hook(activation))
    last = ranges[len(layers) - 1]
    model.classifier.register_forward_pre_hook(lambda m, args: (fake_quantize(args[0], last.grid()),))
    model.classifier.register_forward_hook(_output_hook(ranges[-1]))


@torch.no_grad()
def _correct_biases(model: MobileNetV1, calibration: torch.Tensor, kept: Sequence[bool]) -> None:
    """Bias correction (Nagel et al., 2019) of the layers put on new grids: the mean shift
    each channel's rounded weights cause is removed before the first step (with one grid
    per tensor it took the fake-quantized 0.25/128 after a whole-network fine-tune from
    14 pt below float to 2 pt); the phase starts from the corrected model."""
    training = model.training
    corrected = correct_biases(model.eval(), calibration, _WeightOnGrid(), [not k for k in kept])
    model.train(training)
    for layer, source in zip(quantized_layers(model), quantized_layers(corrected), strict=True):
        layer.bias.copy_(source.bias)


def _as_pixels(x: torch.Tensor, preprocessing: Preprocessing, grid: Grid) -> torch.Tensor:
    """The input as a uint8 model reads it: the pixels ``p`` it was normalized from, as
    ``s (p - z)`` on the input grid (LiteRT's uint8 input; with Google's presets half a
    step below the float input, whose mean 127.5 is not a grid point)."""
    mean, std = preprocessing.mean[0], preprocessing.std[0]
    pixels = torch.clamp(torch.round(x.detach().float() * (255 * std) + 255 * mean), 0, 255)
    return x + ((pixels - grid.zero_point) * grid.scale - x.detach()).to(x.dtype)


def _output_hook(activation: ActivationRange) -> Callable[..., torch.Tensor]:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return activation(output, module.training)

    return hook


@torch.no_grad()
def finalize(model: MobileNetV1, preprocessing: Preprocessing) -> tuple[MobileNetV1, Int8Grids]:
    """A plain copy of an instrumented ``model`` whose weights and biases lie on their grids,
    and those grids: what the saved weights carry."""
    ranges = getattr(model, RANGES).ranges
    plain = copy.deepcopy(model)
    delattr(plain, RANGES)
    for module in [m for m in plain.modules() if isinstance(m, ConvBNAct)] + [plain.classifier]:
        module._forward_hooks.clear()  # the fake quantization of outputs (and of the pooled features)
        module._forward_pre_hooks.clear()
    convs = quantized_layers(plain)
    weights = []
    for conv in convs:
        weights.append(conv.parametrizations.weight[0].grid(conv.parametrizations.weight.original))
        # The values on their grids, set by hand: parametrize.remove_parametrizations would
        # delete the properties of the parametrized class, which the copy shares with
        # ``model``, and so break the model still training (a best epoch saved mid-phase).
        weight, bias, plain_type = conv.weight, conv.bias, parametrize.type_before_parametrizations(conv)
        del conv.parametrizations
        conv.__class__ = plain_type
        conv.weight, conv.bias = nn.Parameter(weight), nn.Parameter(bias)
    grids = Int8Grids(input_grid(preprocessing), tuple(weights), tuple(r.grid() for r in ranges), "QAT")
    return plain.eval(), grids
