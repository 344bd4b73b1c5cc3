"""Our folded model as a TFLite graph: Google's own operator chain for MobileNet V1.

Each convolution of Table 1 becomes one CONV_2D or DEPTHWISE_CONV_2D with its folded
batch norm as the bias and its ReLU/ReLU6 fused (Section 3.1's conv-BN-ReLU, the form
Google's files use), then AVERAGE_POOL_2D over the last map, the classifier as a 1x1
CONV_2D, RESHAPE to (1, classes) and, in uint8 files, SOFTMAX, exactly as Google's
quantized files end. TensorFlow "SAME" padding is the ops' own ``SAME``; symmetric
padding is ``SAME`` wherever the two agree (stride 1, or an odd input at stride 2) and
an explicit PAD before a ``VALID`` convolution elsewhere.

In a uint8 graph every tensor carries one (scale, zero point) pair (:class:`Grid`),
weights are uint8 with their own pair and biases int32 at ``s_in * s_w``, as in Google's
files and as the int8-exact emulation (:mod:`mobilenet_v1.weights.google_tflite.int8`) runs them.
An int8 graph is TFLite's int8 scheme inside, for weights on per-channel grids
(:class:`ChannelGrid`: a QAT run's, or after the export's own QAT steps): int8 activations on the same grids (zero point
``z - 128``), int8 weights per output channel and int32 biases at ``s_in * s_w[c]``,
uint8 at both ends (a QUANTIZE after the uint8 pixels and one before the uint8 softmax,
both exact: the same scale, the zero point moved by 128).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ...model import Conv2dSame, ConvBNAct, MobileNetV1, same_padding
from ...weights.grids import ChannelGrid, Grid, WeightGrid, bias_steps
from ..int8 import int8_weight_steps
from .schema import Op, Tensor

__all__ = ["Layer", "build_graph", "conv_layers"]

SOFTMAX_GRID = (1 / 256, 0)  # TFLite's uint8 softmax output: probability q / 256
# Operator versions of an int8 graph (what LiteRT's converter writes for these tensor types)
INT8_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "AVERAGE_POOL_2D": 2, "PAD": 2}


@dataclass(frozen=True)
class Layer:
    """One convolution in TFLite form: weight OHWI (1HWC for depthwise), float bias,
    padding ``SAME``/``VALID`` with ``pads`` (top, bottom, left, right) for an explicit
    PAD, fused activation, NHWC output shape."""

    name: str
    depthwise: bool
    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: str
    pads: tuple[int, int, int, int] | None
    activation: str
    output: tuple[int, int, int, int]


def conv_layers(folded: MobileNetV1, resolution: int) -> list[Layer]:
    """The convolutions of a batch-norm-folded model at ``resolution``, classifier last."""
    if not isinstance(folded.classifier, nn.Linear) or folded.global_pool != "avg":
        raise ValueError("a LiteRT export needs the classifier head (this model has num_classes=0 or no pooling)")
    layers, size = [], resolution
    convs = [m for m in folded.features.modules() if isinstance(m, ConvBNAct)]
    for i, module in enumerate(convs):
        layer = _layer(module, f"conv{i}", size)
        layers.append(layer)
        size = layer.output[1]
    weight = folded.classifier.weight.detach().numpy()
    bias = folded.classifier.bias.detach().numpy()
    width = weight.shape[0]
    # SAME as in Google's files (a 1x1 kernel pads nothing either way)
    classifier = Layer("classifier", False, weight[:, None, None, :], bias, 1, "SAME", None, "NONE", (1, 1, 1, width))
    return [*layers, classifier]


def _layer(module: ConvBNAct, name: str, size: int) -> Layer:
    conv = module.conv
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    depthwise = conv.groups > 1
    if depthwise and conv.groups != conv.in_channels:
        raise ValueError(f"{name}: grouped convolution with {conv.groups} groups has no TFLite operator")
    weight = conv.weight.detach().numpy()
    weight = weight.transpose(1, 2, 3, 0) if depthwise else weight.transpose(0, 2, 3, 1)  # -> 1HWC / OHWI
    activation = "RELU6" if isinstance(module.act, nn.ReLU6) else "RELU" if isinstance(module.act, nn.ReLU) else None
    if activation is None:
        raise ValueError(f"{name}: activation {type(module.act).__name__} has no fused TFLite form")
    out = -(-size // stride)
    pad, pads = conv.padding[0], None
    if isinstance(conv, Conv2dSame) or same_padding(size, kernel, stride) == (pad, pad):
        padding = "SAME"
    else:  # symmetric padding where TensorFlow's SAME would put the extra pixel after
        padding, pads = "VALID", (pad, pad, pad, pad)
        out = (size + 2 * pad - kernel) // stride + 1
    return Layer(
        name,
        depthwise,
        weight,
        conv.bias.detach().numpy(),
        stride,
        padding,
        pads,
        activation,
        (1, out, out, conv.out_channels),
    )


def build_graph(
    layers: list[Layer], resolution: int, grids: dict[str, WeightGrid] | None = None, *, int8: bool = False
) -> tuple[list[Tensor], list[Op]]:
    """Tensors and ops of the network: float32 without ``grids``; with them quantized,
    where ``grids`` maps ``"input"``, each layer's name and ``"<name>.weight"`` to a grid
    (the pooled features keep the last convolution's grid, as TFLite's AVERAGE_POOL_2D
    requires) and the graph ends with a uint8 SOFTMAX: uint8 throughout, or ``int8``
    inside (every weight on per-channel int8 grids)."""
    graph = _Graph(grids, int8)
    shape = (1, resolution, resolution, layers[0].weight.shape[-1])
    x = graph.activation("input", shape, "input", "uint8")
    if int8:
        x = graph.requantize(x, "input/int8", "input", "int8")
    for layer in layers[:-1]:
        x = graph.conv(layer, x)
    last = layers[-2]
    pooled = graph.activation("pool", (1, 1, 1, last.output[-1]), last.name)
    size = last.output[1]
    graph.op("AVERAGE_POOL_2D", (x,), pooled, padding="VALID", stride=1, filter=size, activation="NONE")
    logits = graph.conv(layers[-1], pooled)
    classes = layers[-1].output[-1]
    shape = graph.add(Tensor("logits_shape", (2,), "int32", np.array([1, classes], np.int32)))
    out = graph.activation("logits", (1, classes), layers[-1].name)
    graph.op("RESHAPE", (logits, shape), out)
    if int8:
        out = graph.requantize(out, "logits/uint8", layers[-1].name, "uint8")
    if grids is not None:
        probs = graph.add(Tensor("probabilities", (1, classes), "uint8", None, *SOFTMAX_GRID))
        graph.op("SOFTMAX", (out,), probs, beta=1.0)
    return graph.tensors, graph.ops


class _Graph:
    """Tensors and ops being appended in execution order."""

    def __init__(self, grids: dict[str, WeightGrid] | None, int8: bool) -> None:
        self.grids, self.int8, self.tensors, self.ops = grids, int8, [], []

    def add(self, tensor: Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def op(self, name: str, inputs: tuple[int, ...], output: int, **options: object) -> None:
        version = INT8_VERSIONS.get(name, 1) if self.int8 else 1
        self.ops.append(Op(name, inputs, (output,), options, version))

    def activation(self, name: str, shape: tuple[int, ...], grid: str, dtype: str | None = None) -> int:
        """A tensor on the uint8 grid ``grids[grid]``, as int8 (zero point ``z - 128``) inside an int8 graph."""
        if self.grids is None:
            return self.add(Tensor(name, shape))
        g = self.grids[grid]
        dtype = dtype or ("int8" if self.int8 else "uint8")
        zero = g.zero_point - 128 if dtype == "int8" else g.zero_point
        return self.add(Tensor(name, shape, dtype, None, g.scale, zero))

    def requantize(self, x: int, name: str, grid: str, dtype: str) -> int:
        """QUANTIZE between uint8 and int8 on the same grid (exact: the values move by 128)."""
        out = self.activation(name, self.tensors[x].shape, grid, dtype)
        self.ops.append(Op("QUANTIZE", (x,), (out,), {}, 2 if dtype == "int8" else 1))
        return out

    def conv(self, layer: Layer, x: int) -> int:
        x_grid = self._grid_of(x)
        if layer.pads is not None:
            top, bottom, left, right = layer.pads
            pads = self.add(
                Tensor(
                    f"{layer.name}/pads",
                    (4, 2),
                    "int32",
                    np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32),
                )
            )
            n, h, w, c = self.tensors[x].shape
            padded = self._like(x, f"{layer.name}/padded", (n, h + top + bottom, w + left + right, c))
            self.op("PAD", (x, pads), padded)
            x = padded
        weight, bias = self._constants(layer, x_grid)
        out = self.activation(layer.name, layer.output, layer.name)
        kind = "DEPTHWISE_CONV_2D" if layer.depthwise else "CONV_2D"
        extra = {"depth": 1} if layer.depthwise else {}
        self.op(
            kind,
            (x, weight, bias),
            out,
            padding=layer.padding,
            stride=layer.stride,
            activation=layer.activation,
            **extra,
        )
        return out

    def _grid_of(self, index: int) -> Grid | None:
        t = self.tensors[index]
        return None if t.scale is None else Grid(t.scale, t.zero_point)

    def _like(self, x: int, name: str, shape: tuple[int, ...]) -> int:
        t = self.tensors[x]
        return self.add(Tensor(name, shape, t.dtype, None, t.scale, t.zero_point))

    def _constants(self, layer: Layer, x_grid: Grid | None) -> tuple[int, int]:
        if self.grids is None or x_grid is None:
            weight = Tensor(f"{layer.name}/weight", layer.weight.shape, "float32", layer.weight.astype(np.float32))
            bias = Tensor(f"{layer.name}/bias", layer.bias.shape, "float32", layer.bias.astype(np.float32))
            return self.add(weight), self.add(bias)
        w_grid = self.grids[f"{layer.name}.weight"]
        axis = 3 if layer.depthwise else 0  # the output channels of 1HWC / OHWI
        if self.int8 and isinstance(w_grid, Grid):  # exact where a channel lies within 127 steps of its zero
            w_grid = ChannelGrid(tuple(int8_weight_steps(w_grid, np.moveaxis(layer.weight, axis, 0)).tolist()))
        bias_scale = bias_steps(x_grid, w_grid)
        q_bias = np.rint(layer.bias.astype(np.float64) / bias_scale)
        if np.abs(q_bias).max(initial=0) >= 2**31:
            raise ValueError(f"{layer.name}: a bias does not fit int32 at scale {bias_scale.min():.3g}")
        name, shape = f"{layer.name}/weight", layer.weight.shape
        if isinstance(w_grid, ChannelGrid):
            w = Tensor(name, shape, "int8", w_grid.quantize(layer.weight, axis), w_grid.scales, 0, axis)
            bias_scale = tuple(bias_scale.tolist())
        else:
            w = Tensor(name, shape, "uint8", w_grid.quantize(layer.weight), w_grid.scale, w_grid.zero_point)
            bias_scale = float(bias_scale[0])
        b = Tensor(f"{layer.name}/bias", layer.bias.shape, "int32", q_bias.astype(np.int32), bias_scale, 0)
        return self.add(w), self.add(b)
