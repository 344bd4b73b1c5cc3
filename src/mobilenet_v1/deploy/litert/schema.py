"""Write a TensorFlow Lite flatbuffer from a flat list of tensors and operators.

The ``tflite`` package (generated from LiteRT's ``schema.fbs``, the same one
:mod:`~mobilenet_v1.weights.google_tflite.reader` reads with) has a builder function per table
field; this module is the only place that calls them. A graph is a chain of
:class:`Tensor` and :class:`Op` records, written as one subgraph with one input and one
output, every constant in its own 16-byte-aligned buffer (buffer 0 is the empty
sentinel the schema reserves), and named metadata buffers beside it (the schema's
``Model.metadata``, which interpreters ignore and readers look up by name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...optional import require

__all__ = ["Op", "Tensor", "write_model"]

SCHEMA_VERSION = 3  # TFL3
ALIGNMENT = 16  # constant buffers: what LiteRT's own converter aligns them to
_DTYPES = {"float32": "FLOAT32", "uint8": "UINT8", "int8": "INT8", "int32": "INT32"}
# Builtin options written per op: (options table, its fields in our key -> schema name).
_OPTIONS: dict[str, tuple[str, dict[str, str]]] = {
    "CONV_2D": ("Conv2DOptions", {"padding": "Padding", "stride": "Stride", "activation": "FusedActivationFunction"}),
    "DEPTHWISE_CONV_2D": (
        "DepthwiseConv2DOptions",
        {"padding": "Padding", "stride": "Stride", "activation": "FusedActivationFunction", "depth": "DepthMultiplier"},
    ),
    "AVERAGE_POOL_2D": (
        "Pool2DOptions",
        {"padding": "Padding", "stride": "Stride", "activation": "FusedActivationFunction", "filter": "Filter"},
    ),
    "SOFTMAX": ("SoftmaxOptions", {"beta": "Beta"}),
    "PAD": ("PadOptions", {}),
    "QUANTIZE": ("QuantizeOptions", {}),
    "RESHAPE": ("", {}),  # the new shape is its second input, as in Google's files
}


@dataclass(frozen=True, eq=False)
class Tensor:
    """One tensor: NHWC ``shape``, ``dtype`` (float32, uint8, int8, int32), constant
    ``data`` for weights, biases and shapes, and for quantized tensors a ``scale`` and
    ``zero_point`` (real value ``scale * (q - zero_point)``): one per tensor, or a scale
    per channel along ``axis`` (zero points 0: int8 weights and their int32 biases)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    data: np.ndarray | None = None
    scale: float | tuple[float, ...] | None = None
    zero_point: int = 0
    axis: int = 0


@dataclass(frozen=True)
class Op:
    """One builtin operator on tensor indices; ``options`` as in :data:`_OPTIONS` (enum
    values by name: ``padding="SAME"``, ``activation="RELU6"``; ``stride``/``filter`` one
    int for both axes); ``version`` the operator version its tensor types need (int8
    convolutions 3, as LiteRT's converter writes them)."""

    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    version: int = 1


def write_model(
    tensors: Sequence[Tensor], ops: Sequence[Op], *, metadata: Mapping[str, bytes], description: str
) -> bytes:
    """The flatbuffer of one subgraph: input ``tensors[ops[0].inputs[0]]``, output the
    last op's output; ``metadata`` becomes named buffers."""
    tfl = require("tflite", "tflite", "writing .tflite files")
    flatbuffers = require("flatbuffers", "tflite", "writing .tflite files")
    builder = flatbuffers.Builder(1 << 20)
    codes = sorted({(op.name, op.version) for op in ops})
    datas = [t.data for t in tensors if t.data is not None]
    buffers = [_buffer(tfl, builder, None)] + [_buffer(tfl, builder, d) for d in datas]
    buffers += [_buffer(tfl, builder, value) for value in metadata.values()]
    buffer_of, index = [], 1
    for t in tensors:
        buffer_of.append(index if t.data is not None else 0)
        index += t.data is not None
    graph = _subgraph(tfl, builder, tensors, ops, codes, buffer_of)
    meta = [_metadata(tfl, builder, name, index + i) for i, name in enumerate(metadata)]
    opcodes = [_opcode(tfl, builder, name, version) for name, version in codes]
    vectors = {
        "OperatorCodes": opcodes,
        "Subgraphs": [graph],
        "Buffers": buffers,
        "Metadata": meta,
    }
    offsets = {key: _table_vector(tfl, "Model", builder, key, items) for key, items in vectors.items()}
    text = builder.CreateString(description)
    tfl.ModelStart(builder)
    tfl.ModelAddVersion(builder, SCHEMA_VERSION)
    tfl.ModelAddDescription(builder, text)
    for key, offset in offsets.items():
        getattr(tfl, f"ModelAdd{key}")(builder, offset)
    builder.Finish(tfl.ModelEnd(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _table_vector(tfl: Any, table: str, builder: Any, key: str, items: Sequence[int]) -> int:
    getattr(tfl, f"{table}Start{key}Vector")(builder, len(items))
    for item in reversed(items):
        builder.PrependUOffsetTRelative(item)
    return builder.EndVector()


def _bytes(builder: Any, data: bytes) -> int:
    builder.StartVector(1, len(data), ALIGNMENT)
    builder.head -= len(data)
    builder.Bytes[builder.head : builder.head + len(data)] = data
    return builder.EndVector()


def _buffer(tfl: Any, builder: Any, data: np.ndarray | bytes | None) -> int:
    raw = None if data is None else _bytes(builder, data if isinstance(data, bytes) else data.tobytes())
    tfl.BufferStart(builder)
    if raw is not None:
        tfl.BufferAddData(builder, raw)
    return tfl.BufferEnd(builder)


def _metadata(tfl: Any, builder: Any, name: str, buffer: int) -> int:
    text = builder.CreateString(name)
    tfl.MetadataStart(builder)
    tfl.MetadataAddName(builder, text)
    tfl.MetadataAddBuffer(builder, buffer)
    return tfl.MetadataEnd(builder)


def _opcode(tfl: Any, builder: Any, name: str, version: int) -> int:
    code = getattr(tfl.BuiltinOperator, name)
    tfl.OperatorCodeStart(builder)
    tfl.OperatorCodeAddDeprecatedBuiltinCode(builder, min(code, 127))  # the schema's int8 field
    tfl.OperatorCodeAddBuiltinCode(builder, code)
    tfl.OperatorCodeAddVersion(builder, version)
    return tfl.OperatorCodeEnd(builder)


def _ints(builder: Any, values: Sequence[int]) -> int:
    return builder.CreateNumpyVector(np.asarray(values, dtype=np.int32))


def _subgraph(
    tfl: Any,
    builder: Any,
    tensors: Sequence[Tensor],
    ops: Sequence[Op],
    codes: list[tuple[str, int]],
    buffer_of: list[int],
) -> int:
    written = [_tensor(tfl, builder, t, b) for t, b in zip(tensors, buffer_of, strict=True)]
    operators = [_operator(tfl, builder, op, codes.index((op.name, op.version))) for op in ops]
    tensor_vec = _table_vector(tfl, "SubGraph", builder, "Tensors", written)
    op_vec = _table_vector(tfl, "SubGraph", builder, "Operators", operators)
    inputs, outputs = _ints(builder, [ops[0].inputs[0]]), _ints(builder, [ops[-1].outputs[0]])
    name = builder.CreateString("main")
    tfl.SubGraphStart(builder)
    tfl.SubGraphAddTensors(builder, tensor_vec)
    tfl.SubGraphAddInputs(builder, inputs)
    tfl.SubGraphAddOutputs(builder, outputs)
    tfl.SubGraphAddOperators(builder, op_vec)
    tfl.SubGraphAddName(builder, name)
    return tfl.SubGraphEnd(builder)


def _tensor(tfl: Any, builder: Any, tensor: Tensor, buffer: int) -> int:
    quant = None
    if tensor.scale is not None:
        scales = np.atleast_1d(np.array(tensor.scale, np.float32))
        zeros = np.full(len(scales), tensor.zero_point, np.int64)
        scale, zero = builder.CreateNumpyVector(scales), builder.CreateNumpyVector(zeros)
        tfl.QuantizationParametersStart(builder)
        tfl.QuantizationParametersAddScale(builder, scale)
        tfl.QuantizationParametersAddZeroPoint(builder, zero)
        tfl.QuantizationParametersAddQuantizedDimension(builder, tensor.axis)
        quant = tfl.QuantizationParametersEnd(builder)
    shape, name = _ints(builder, tensor.shape), builder.CreateString(tensor.name)
    tfl.TensorStart(builder)
    tfl.TensorAddShape(builder, shape)
    tfl.TensorAddType(builder, getattr(tfl.TensorType, _DTYPES[tensor.dtype]))
    tfl.TensorAddBuffer(builder, buffer)
    tfl.TensorAddName(builder, name)
    if quant is not None:
        tfl.TensorAddQuantization(builder, quant)
    return tfl.TensorEnd(builder)


def _operator(tfl: Any, builder: Any, op: Op, code: int) -> int:
    table, fields = _OPTIONS[op.name]
    options = _options(tfl, builder, table, fields, op.options) if table else None
    inputs, outputs = _ints(builder, op.inputs), _ints(builder, op.outputs)
    tfl.OperatorStart(builder)
    tfl.OperatorAddOpcodeIndex(builder, code)
    tfl.OperatorAddInputs(builder, inputs)
    tfl.OperatorAddOutputs(builder, outputs)
    if options is not None:
        tfl.OperatorAddBuiltinOptionsType(builder, getattr(tfl.BuiltinOptions, table))
        tfl.OperatorAddBuiltinOptions(builder, options)
    return tfl.OperatorEnd(builder)


def _options(tfl: Any, builder: Any, table: str, fields: dict[str, str], values: dict[str, Any]) -> int:
    enums = {"Padding": tfl.Padding, "FusedActivationFunction": tfl.ActivationFunctionType}
    getattr(tfl, f"{table}Start")(builder)
    for key, schema_name in fields.items():
        value = values[key]
        if schema_name in enums:
            value = getattr(enums[schema_name], value)
        axes = ("H", "W") if schema_name == "Stride" else ("Height", "Width") if schema_name == "Filter" else ("",)
        for axis in axes:
            getattr(tfl, f"{table}Add{schema_name}{axis}")(builder, value)
    return getattr(tfl, f"{table}End")(builder)
