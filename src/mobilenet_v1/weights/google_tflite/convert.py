"""Import Google's TFLite MobileNet V1 models into ``mobilenet_v1(..., folded_bn=True)``.

Google's released models (TF-slim ``mobilenet_v1.md``, TFLite hosted models) are
quantization-aware-trained: batch norm is folded into each convolution (weights and a
bias), activations are ReLU6, padding is TensorFlow "SAME", the classifier is a 1x1
convolution with 1001 outputs (index 0 = background) followed by RESHAPE and SOFTMAX.

The import is explicit (nanoGPT style): :func:`import_table` lists, for the alpha and
resolution read from the file, every op we expect with its weight and output shape and
the parameter of our model it fills; :func:`check_ops` asserts the count and every shape
before anything is copied. Weights are dequantized (``scale * (q - zero_point)``, per
tensor or per channel) and int32 biases use ``scale = input_scale * weight_scale``: this
is the "float" fidelity level (float activations). The reader itself lives in
:mod:`mobilenet_v1.weights.google_tflite.reader` and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...config import MobileNetV1Config, layer_plan
from ...model import MobileNetV1
from ..records import google_config
from .reader import TFLiteOp, dequantize, read_tflite_files

__all__ = ["ImportRow", "check_ops", "import_table", "infer_architecture", "load_tflite", "tflite_state_dict"]


@dataclass(frozen=True)
class ImportRow:
    """One expected op: its builtin name, the module of ours it fills (``None`` for ops
    without weights), its weight shape in TFLite layout (OHWI; 1HWC for depthwise) and
    its NHWC output shape."""

    op: str
    target: str | None
    weight: tuple[int, ...] | None
    output: tuple[int, ...]
    stride: int = 1
    activation: str = "NONE"


def import_table(alpha: float, resolution: int, num_classes: int = 1001) -> list[ImportRow]:
    """The ops of Google's MobileNet V1 classifier, in order, for this alpha/resolution."""
    rows, size = [], resolution
    for spec in layer_plan(google_config(alpha, num_classes)):
        size = -(-size // spec.stride)  # TF "SAME": ceil(size / stride)
        if spec.name == "stem":
            target, weight = "features.0.conv", (spec.out_channels, 3, 3, 3)
        else:
            block, kind = spec.name.removeprefix("block").split(".")
            target = f"features.{block}.{kind}.conv"
            weight = (1, 3, 3, spec.in_channels) if kind == "dw" else (spec.out_channels, 1, 1, spec.in_channels)
        op = "DEPTHWISE_CONV_2D" if spec.kind == "depthwise" else "CONV_2D"
        rows.append(ImportRow(op, target, weight, (1, size, size, spec.out_channels), spec.stride, "RELU6"))
    width = rows[-1].output[-1]
    rows += [
        ImportRow("AVERAGE_POOL_2D", None, None, (1, 1, 1, width)),
        ImportRow("CONV_2D", "classifier", (num_classes, 1, 1, width), (1, 1, 1, num_classes)),
        ImportRow("RESHAPE", None, None, (1, num_classes)),
        ImportRow("SOFTMAX", None, None, (1, num_classes)),
    ]
    return rows


def infer_architecture(ops: Sequence[TFLiteOp], source: str) -> tuple[float, int, int]:
    """(alpha, resolution, num_classes) read from the graph: the input size, the width of
    the last feature map (1024 * alpha) and the classifier's outputs."""
    if not ops:
        raise ValueError(f"{source}: the graph has no operators")
    first_in = ops[0].inputs[0].shape if ops[0].inputs else ()
    if ops[0].name != "CONV_2D" or len(first_in) != 4 or first_in[3] != 3 or first_in[1] != first_in[2]:
        hint = " (a head-layers file: load it after its embedding extractor)" if first_in[1:3] == (1, 1) else ""
        raise ValueError(
            f"{source}: not a MobileNet V1 classifier: it starts with {ops[0].name} on input {first_in}, "
            f"expected CONV_2D on a square RGB image (1, H, W, 3){hint}"
        )
    pools = [i for i, op in enumerate(ops) if op.name == "AVERAGE_POOL_2D"]
    if not pools:
        raise ValueError(f"{source}: not a MobileNet V1 classifier: no AVERAGE_POOL_2D op")
    width = ops[pools[0]].inputs[0].shape[-1]
    head = ops[pools[0] + 1] if pools[0] + 1 < len(ops) else None
    num_classes = head.inputs[1].shape[0] if head is not None and len(head.inputs) > 1 else 1001
    return width / 1024, first_in[1], num_classes


def check_ops(ops: Sequence[TFLiteOp], table: Sequence[ImportRow], source: str) -> None:
    """Assert the op count, every op's name, options and weight/bias/output shapes."""
    names = ", ".join(sorted({op.name for op in ops} - {row.op for row in table}))
    if len(ops) != len(table) or names:
        extra = f"; unexpected operators: {names}" if names else ""
        raise ValueError(f"{source}: expected the {len(table)} ops of MobileNet V1, found {len(ops)}{extra}")
    for i, (op, row) in enumerate(zip(ops, table, strict=True)):
        where = f"{source}: op {i} ({row.op}{' -> ' + row.target if row.target else ''})"
        _expect(where, "operator", op.name, row.op)
        _expect(where, "output shape", op.outputs[0].shape, row.output)
        if row.weight is not None:
            _expect(where, "weight shape", op.inputs[1].shape, row.weight)
            _expect(where, "bias shape", op.inputs[2].shape if len(op.inputs) > 2 else None, (row.output[-1],))
            if op.inputs[1].data is None or op.inputs[2].data is None:
                raise ValueError(f"{where}: weight or bias is not a constant")
            _expect(where, "fused activation", op.options.get("fused_activation"), row.activation)
            _expect(where, "stride", (op.options.get("stride_h"), op.options.get("stride_w")), (row.stride,) * 2)
            _expect(where, "padding", op.options.get("padding"), "SAME")
        if row.op == "DEPTHWISE_CONV_2D":
            _expect(where, "depth multiplier", op.options.get("depth_multiplier"), 1)
        if row.op == "AVERAGE_POOL_2D":
            size = op.inputs[0].shape[1:3]
            _expect(where, "pool size", (op.options.get("filter_h"), op.options.get("filter_w")), size)


def _expect(where: str, what: str, got: object, want: object) -> None:
    if got != want:
        raise ValueError(f"{where}: {what} {got}, expected {want}")


def _bias(op: TFLiteOp) -> np.ndarray:
    x, w, b = op.inputs[:3]
    if b.scale.size == 0 or x.scale.size == 0:
        return b.dequantize()  # a float model: nothing to dequantize
    # TFLite's kernels requantize the int32 accumulator with input_scale * weight_scale.
    return dequantize(b.data, x.scale * w.scale, np.zeros_like(b.zero_point), 0)


def _torch_weight(row: ImportRow, weight: np.ndarray) -> torch.Tensor:
    if row.op == "DEPTHWISE_CONV_2D":
        weight = weight.transpose(3, 0, 1, 2)  # 1HWC -> C1HW
    elif row.target == "classifier":
        weight = weight.reshape(weight.shape[0], -1)  # Google's 1x1 conv is our nn.Linear
    else:
        weight = weight.transpose(0, 3, 1, 2)  # OHWI -> OIHW
    return torch.from_numpy(np.ascontiguousarray(weight))


def tflite_state_dict(
    ops: Sequence[TFLiteOp], source: str = "model"
) -> tuple[dict[str, torch.Tensor], MobileNetV1Config]:
    """Check the graph against :func:`import_table` and return our state dict (float32,
    dequantized) and the matching configuration."""
    alpha, resolution, num_classes = infer_architecture(ops, source)
    table = import_table(alpha, resolution, num_classes)
    check_ops(ops, table, source)
    state: dict[str, torch.Tensor] = {}
    for op, row in zip(ops, table, strict=True):
        if row.target is not None:
            state[f"{row.target}.weight"] = _torch_weight(row, op.inputs[1].dequantize())
            state[f"{row.target}.bias"] = torch.from_numpy(_bias(op))
    return state, google_config(alpha, num_classes)


def load_tflite(paths: str | Path | Sequence[str | Path]) -> tuple[MobileNetV1, dict[str, Any]]:
    """Read Google's ``.tflite`` model (or extractor + head files) into our float model.

    Returns the model in eval mode and ``{"alpha", "resolution", "num_classes",
    "input_scale", "input_zero_point"}``; the uint8 input ``q`` is ``scale * (q - zp)``.
    """
    source = str(paths) if isinstance(paths, (str, Path)) else " + ".join(map(str, paths))
    ops = read_tflite_files(paths)
    state, config = tflite_state_dict(ops, source)
    model = MobileNetV1(config)
    model.load_state_dict(state, strict=True)
    x = ops[0].inputs[0]
    info = {
        "alpha": config.alpha,
        "resolution": x.shape[1],
        "num_classes": config.num_classes,
        "input_scale": float(x.scale[0]) if x.scale.size else None,
        "input_zero_point": int(x.zero_point[0]) if x.zero_point.size else None,
    }
    return model.eval(), info
