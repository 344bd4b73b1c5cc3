"""Read TensorFlow Lite flatbuffers (the ``tflite`` package) into plain Python objects.

:func:`read_tflite` parses a ``.tflite`` file into a flat list of :class:`TFLiteOp` in
execution order, each holding its builtin name, options and its input/output
:class:`TFLiteTensor` (shape, dtype, constant data, scale, zero point, quantized
dimension). :func:`join_ops` appends a head-layers graph to an embedding extractor
(Google ships MobileNet V1 1.0/224 as two files). ``convert`` maps these ops onto our
model; the int8 emulation runs them as TFLite does.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ...optional import require
from ...untrusted import printable, read_bounded

__all__ = ["TFLiteOp", "TFLiteTensor", "dequantize", "join_ops", "read_tflite", "read_tflite_files", "with_head"]

MAX_TFLITE_BYTES = 256 << 20  # Google's largest MobileNet V1 (1.0/224 float) is 17 MB
_DTYPES = {"FLOAT32": np.float32, "INT32": np.int32, "UINT8": np.uint8, "INT8": np.int8, "INT64": np.int64}
# Builtin options we read, per op: (options class, {our key: flatbuffer accessor}).
_STRIDED = {"stride_h": "StrideH", "stride_w": "StrideW", "padding": "Padding"}
_ACT = {"fused_activation": "FusedActivationFunction"}
_OPTIONS: dict[str, tuple[str, dict[str, str]]] = {
    "CONV_2D": (
        "Conv2DOptions",
        {**_STRIDED, **_ACT, "dilation_h": "DilationHFactor", "dilation_w": "DilationWFactor"},
    ),
    "DEPTHWISE_CONV_2D": (
        "DepthwiseConv2DOptions",
        {**_STRIDED, **_ACT, "depth_multiplier": "DepthMultiplier", "dilation_h": "DilationHFactor"},
    ),
    "AVERAGE_POOL_2D": ("Pool2DOptions", {**_STRIDED, **_ACT, "filter_h": "FilterHeight", "filter_w": "FilterWidth"}),
    "RESHAPE": ("ReshapeOptions", {"new_shape": "NewShapeAsNumpy"}),
    "SOFTMAX": ("SoftmaxOptions", {"beta": "Beta"}),
}


@dataclass(frozen=True, eq=False)
class TFLiteTensor:
    """One tensor of the graph. ``data`` is set for constants (weights, biases, shapes).

    ``scale``/``zero_point`` are empty for float tensors, of length 1 for per-tensor and
    of length ``shape[quantized_dimension]`` for per-channel quantization.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None
    scale: np.ndarray
    zero_point: np.ndarray
    quantized_dimension: int = 0
    index: int = -1

    def dequantize(self) -> np.ndarray:
        """Real values ``scale * (q - zero_point)`` (float32); float data is returned as is."""
        if self.data is None:
            raise ValueError(f"tensor {self.name!r} has no constant data")
        if self.scale.size == 0:
            return self.data.astype(np.float32)
        return dequantize(self.data, self.scale, self.zero_point, self.quantized_dimension)


@dataclass(frozen=True, eq=False)
class TFLiteOp:
    """One operator: builtin name (``"CONV_2D"``), options (strides, padding, fused
    activation, depth multiplier, pool size, ...; enum values as names) and tensors."""

    name: str
    inputs: tuple[TFLiteTensor, ...]
    outputs: tuple[TFLiteTensor, ...]
    options: dict[str, Any] = field(default_factory=dict)


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 0) -> np.ndarray:
    """Affine dequantization, per tensor (one scale) or per channel along ``axis``."""
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((q.astype(np.float64) - zero_point) * scale).astype(np.float32)


def _tflite() -> Any:
    return require("tflite", "tflite", "reading .tflite files")


def read_tflite(path: str | Path) -> list[TFLiteOp]:
    """Parse a ``.tflite`` file into its operators, in execution order (first subgraph).

    Raises ``FileNotFoundError`` for a missing file and a one-line ``ValueError`` naming
    the file for anything that is not a complete TFLite flatbuffer.
    """
    path = Path(path)
    data = read_bounded(path, "TFLite flatbuffer", MAX_TFLITE_BYTES, b"TFL3")
    try:
        ops, end = _parse(_tflite(), data)
    except (IndexError, struct.error, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ValueError(f"{path}: truncated or corrupt TFLite file ({type(exc).__name__}: {exc})") from None
    # Google's files append a zip archive (the labels) after the flatbuffer: check it is whole.
    tail = data[end:]
    if b"PK\x03\x04" in tail and not zipfile.is_zipfile(io.BytesIO(tail)):
        raise ValueError(f"{path}: truncated or corrupt TFLite file (its appended metadata archive is incomplete)")
    return ops


def _parse(tfl: Any, data: bytes) -> tuple[list[TFLiteOp], int]:
    """The ops, and where the flatbuffer's last constant buffer ends."""
    model = tfl.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() < 1:
        raise ValueError("no subgraph")
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    tensors = [_tensor(tfl, model, graph.Tensors(i), i) for i in range(graph.TensorsLength())]
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = codes[op.OpcodeIndex()]
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        ins = tuple(tensors[t] for t in op.InputsAsNumpy() if t >= 0)
        outs = tuple(tensors[t] for t in op.OutputsAsNumpy())
        ops.append(TFLiteOp(name, ins, outs, _options(tfl, name, op)))
    return ops, _buffers_end(model, data)


def _buffers_end(model: Any, data: bytes) -> int:
    base = np.frombuffer(data, np.uint8).ctypes.data  # buffer views share the file's memory
    end = 0
    for i in range(model.BuffersLength()):
        view = model.Buffers(i).DataAsNumpy()
        if isinstance(view, np.ndarray) and view.size:
            end = max(end, view.ctypes.data - base + view.nbytes)
    return end


def _tensor(tfl: Any, model: Any, t: Any, index: int) -> TFLiteTensor:
    type_names = {v: k for k, v in vars(tfl.TensorType).items() if not k.startswith("_")}
    dtype = type_names[t.Type()]
    shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    buffer = model.Buffers(t.Buffer())
    data = None
    if buffer is not None and buffer.DataLength() > 0:
        raw = buffer.DataAsNumpy().tobytes()
        np_dtype = np.dtype(_DTYPES[dtype])
        if len(raw) != np_dtype.itemsize * int(np.prod(shape)):
            raise ValueError(f"tensor {index} holds {len(raw)} bytes for shape {shape} {dtype}")
        data = np.frombuffer(raw, np_dtype).reshape(shape).copy()
    q = t.Quantization()
    has_q = q is not None and q.ScaleLength() > 0
    scale = q.ScaleAsNumpy().astype(np.float64) if has_q else np.zeros(0)
    zero_point = q.ZeroPointAsNumpy().astype(np.int64) if has_q else np.zeros(0, np.int64)
    axis = q.QuantizedDimension() if has_q else 0
    # One scale per tensor, or one per channel of the quantized dimension (else dequantize fails)
    per_channel_ok = axis < len(shape) and shape[axis] == scale.size
    if zero_point.size != scale.size or (scale.size > 1 and not per_channel_ok):
        raise ValueError(f"tensor {index} has {scale.size} scales, {zero_point.size} zero points for shape {shape}")
    return TFLiteTensor(
        name=printable((t.Name() or b"").decode("utf-8", "replace")),  # printed in error messages
        shape=shape,
        dtype=dtype.lower(),
        data=data,
        scale=scale,
        zero_point=zero_point,
        quantized_dimension=axis,
        index=index,
    )


def _options(tfl: Any, name: str, op: Any) -> dict[str, Any]:
    if name not in _OPTIONS or op.BuiltinOptions() is None:
        return {}
    cls_name, fields = _OPTIONS[name]
    table = op.BuiltinOptions()
    opts = getattr(tfl, cls_name)()
    opts.Init(table.Bytes, table.Pos)
    enums = {
        "padding": {v: k for k, v in vars(tfl.Padding).items() if not k.startswith("_")},
        "fused_activation": {v: k for k, v in vars(tfl.ActivationFunctionType).items() if not k.startswith("_")},
    }
    out: dict[str, Any] = {}
    for key, accessor in fields.items():
        value = getattr(opts, accessor)()
        if key in enums:
            value = enums[key][value]
        elif key == "new_shape":
            value = tuple(int(v) for v in value) if isinstance(value, np.ndarray) else ()
        out[key] = value
    return out


def join_ops(extractor: Sequence[TFLiteOp], head: Sequence[TFLiteOp], source: str = "head") -> list[TFLiteOp]:
    """Append a head-layers graph to an embedding extractor (Google's 1.0/224 split).

    The head's input must have the extractor's output shape, scale and zero point; it is
    replaced by the extractor's output tensor so the joined graph is one chain.
    """
    if not extractor or not head:
        raise ValueError(f"{source}: cannot join an empty graph")
    out, inp = extractor[-1].outputs[0], head[0].inputs[0]
    same_q = out.scale.shape == inp.scale.shape and np.allclose(out.scale, inp.scale)
    if out.shape != inp.shape or not same_q or not np.array_equal(out.zero_point, inp.zero_point):
        raise ValueError(
            f"{source}: head input {inp.shape} (scale {inp.scale}, zero point {inp.zero_point}) does not match "
            f"the extractor output {out.shape} (scale {out.scale}, zero point {out.zero_point})"
        )
    first = replace(head[0], inputs=(out, *head[0].inputs[1:]))
    return [*extractor, first, *head[1:]]


def read_tflite_files(paths: str | Path | Sequence[str | Path]) -> list[TFLiteOp]:
    """Read one ``.tflite`` file, or an embedding extractor followed by its head layers."""
    if isinstance(paths, (str, Path)):
        return read_tflite(paths)
    if len(paths) == 1:
        return read_tflite(paths[0])
    if len(paths) != 2:
        raise ValueError(f"expected one TFLite file or an extractor and a head file, got {len(paths)} paths")
    return join_ops(read_tflite(paths[0]), read_tflite(paths[1]), source=str(paths[1]))


def with_head(path: Path) -> list[Path]:
    """``[path]``, or for Google's 1.0/224 embedding extractor ``[path, head]`` when its
    head-layers file lies beside it (Google ships that model as two files)."""
    head = path.with_name(path.name.replace("_embedding_extractor", "_head_layers"))
    return [path, head] if head != path and head.is_file() else [path]
