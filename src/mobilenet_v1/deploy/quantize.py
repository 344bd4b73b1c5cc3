"""Static post-training int8 quantization of an exported ONNX model (ONNX Runtime).

Two ways to choose the quantization parameters, both giving ORT's U8S8 QDQ form (uint8
activations, int8 weights) that it fuses into ``QLinearConv`` on VNNI kernels:

* ``calibrated`` (any checkpoint): weights int8 per output channel (symmetric),
  activations uint8 per tensor from min/max over calibration images;
* ``tflite`` (Google's QAT models): the activation scales and zero points stored in
  Google's ``.tflite`` file, i.e. the quantization the network was trained with, and its
  convolution weight grids as symmetric per-channel int8 (exact for 98.5% of the
  channels of 0.25/128, see :func:`_int8_weight`) and the classifier's as per-tensor
  int8 (exact, :func:`_classifier_weight`); calibration images then only check the result.

Both at once for a checkpoint fine-tuned from Google's quantized weights: the layers that
still hold them keep Google's quantization, the others are calibrated (:mod:`.int8`).

The first ``float_layers`` convolutions (the 3x3 stem and the first depthwise layer,
Table 1's widest maps with the fewest channels) stay in float: ORT's int8 kernels are
slowest there (too few channels to fill a vector), see docs/deployment.md. A QAT run's
checkpoint keeps none by default (:func:`default_float_layers`): its int8 file computes
what the QAT model computed, first layers included.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import image_folder, load_image
from ..data.transforms import Preprocessing, eval_transform
from ..files import atomic_write
from ..fold import fuse_bn
from ..model import MobileNetV1
from ..optional import require
from ..weights.grids import Grid, Int8Grids, correct_biases, layers_on_grids, quantized_layers
from .common import ExportReport, compare_with_torch
from .int8 import check_qat_grids, grids_used, int8_weight_steps, per_channel_int8, pixel_shift
from .onnx import EXTRA, OnnxModel, export_onnx, read_metadata, set_metadata
from .qat import qat_finetune

__all__ = [
    "DEFAULT_FLOAT_LAYERS",
    "calibration_files",
    "default_float_layers",
    "export_int8",
    "load_batch",
    "quantize_onnx",
    "tflite_overrides",
]

DEFAULT_FLOAT_LAYERS = 2
CALIBRATION_BATCH = 16


def calibration_files(folder: str | Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` images drawn (seeded) from ``folder`` and its sub-folders.

    Raises ``FileNotFoundError``/``NotADirectoryError`` for a missing folder, ``ValueError``
    for one without images and ``PermissionError`` for one that cannot be listed.
    """
    files = image_folder(folder, "calibration")
    if count < 1:
        raise ValueError(f"calibration image count must be >= 1, got {count}")
    return sorted(random.Random(seed).sample(files, min(count, len(files))))


def load_batch(files: Sequence[Path], preprocessing: Preprocessing) -> torch.Tensor:
    """Decode and preprocess ``files`` into one float batch (N, 3, H, W)."""
    transform = eval_transform(preprocessing)
    return torch.stack([transform(load_image(f)) for f in files])


class _Reader:
    """ORT ``CalibrationDataReader``: yields the calibration images in batches."""

    def __init__(self, images: torch.Tensor, input_name: str) -> None:
        self._batches = iter(images.split(CALIBRATION_BATCH))
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch.numpy()}


def _float_nodes(model: Any, float_layers: int) -> list[str]:
    """Names of the first ``float_layers`` Conv nodes and the activations that follow them."""
    convs = [n for n in model.graph.node if n.op_type == "Conv"][:float_layers]
    keep = {n.output[0] for n in convs}
    acts = [n for n in model.graph.node if n.op_type in ("Clip", "Relu") and n.input[0] in keep]
    return [n.name for n in convs + acts]


def params(grid: Grid) -> list[dict[str, Any]]:
    """A uint8 activation grid as an ORT override."""
    return [{"scale": np.array(grid.scale, np.float32), "zero_point": np.array(grid.zero_point, np.uint8)}]


def _int8_weight(grid: Grid, values: np.ndarray) -> list[dict[str, Any]]:
    """A uint8 weight grid as per-channel symmetric int8 (:func:`~.int8.int8_weight_steps`;
    a per-tensor zero point ``z - 128`` is as exact but 1.3-1.6x slower, docs/deployment.md).
    ``values`` is the ONNX weight (on the grid), output channels first."""
    channels = [
        {"scale": np.array(step, np.float32), "zero_point": np.array(0, np.int8)}
        for step in int8_weight_steps(grid, values)
    ]
    channels[0]["axis"] = 0
    return channels


def _classifier_weight(grid: Grid) -> list[dict[str, Any]]:
    """The classifier's per-tensor uint8 grid ``s * (q - z)`` as per-tensor int8
    ``s * ((q - 128) - (z - 128))``: exact for every weight (22 of the 1001 rows of
    Google's 0.25/128 reach past 127 steps and would lose it per channel), and ORT's
    ``QGemm`` runs a per-tensor weight faster: one requantization scale for all outputs
    instead of a scale per output (3.5 µs of ~7 at batch 1; convolutions show no such
    difference, docs/deployment.md)."""
    return [{"scale": np.array(grid.scale, np.float32), "zero_point": np.array(grid.zero_point - 128, np.int8)}]


def tflite_overrides(
    fp32: str | Path, grids: Int8Grids, keep: Sequence[bool] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """``grids`` (Google's own quantization, or a QAT checkpoint's) as ORT
    ``TensorQuantOverrides`` for the layers ``keep`` names (:func:`~mobilenet_v1.weights.grids.layers_on_grids`;
    default all): the rest is calibrated.

    Google's models were trained with quantization in the loop (QAT): each layer's output
    range and weight grid were learned with it. Re-quantizing the dequantized weights per
    channel symmetrically doubles the step wherever a channel's range is lopsided and
    costs about 1 pt of top-1 (docs/deployment.md); keeping the grid costs nothing. The
    k-th Conv (and its Clip) of our graph is the k-th layer of the grids, the Gemm the
    classifier; the pooled features keep the last convolution's grid.
    """
    onnx = require("onnx", EXTRA, "ONNX export")
    graph = onnx.load(str(fp32)).graph
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    ours = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    if len(ours) != len(grids.weights):
        raise ValueError(f"{grids.source} has {len(grids.weights)} layers, the ONNX graph {len(ours)}")
    keep = [True] * len(ours) if keep is None else list(keep)
    if len(keep) != len(ours):
        raise ValueError(f"keep names {len(keep)} layers, the ONNX graph has {len(ours)}")

    out = {graph.input[0].name: params(grids.input)} if keep[0] else {}
    after = {n.input[0]: n.output[0] for n in graph.node if n.op_type in ("Clip", "Relu")}
    for node, w, y, kept in zip(ours, grids.weights, grids.outputs, keep, strict=True):
        if not kept:
            continue
        out[node.output[0]] = params(y)
        if node.op_type == "Gemm":
            out[node.input[1]] = _classifier_weight(w)
        else:
            out[node.input[1]] = _int8_weight(w, weights[node.input[1]])
        if node.output[0] in after:
            out[after[node.output[0]]] = params(y)
    if keep[-2]:  # the pooled features keep the last convolution's grid
        means = [n for n in graph.node if n.op_type in ("ReduceMean", "GlobalAveragePool", "Reshape", "Flatten")]
        for node in means:
            out[node.output[0]] = params(grids.pool)
    return out


def _quantize(fp32: Path, out: Path, images: torch.Tensor, float_layers: int, overrides: dict[str, Any] | None) -> None:
    onnx = require("onnx", EXTRA, "ONNX export")
    quant = require("onnxruntime.quantization", EXTRA, "int8 ONNX export")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        quant.quantize_static(
            str(pre),
            str(out),
            _Reader(images, model.graph.input[0].name),
            quant_format=quant.QuantFormat.QDQ,
            activation_type=quant.QuantType.QUInt8,
            weight_type=quant.QuantType.QInt8,
            per_channel=True,
            calibrate_method=quant.CalibrationMethod.MinMax,
            nodes_to_exclude=_float_nodes(model, float_layers),
            extra_options={
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
                "TensorQuantOverrides": overrides or {},
            },
        )


def default_float_layers(grids: Int8Grids | None) -> int:
    """:data:`DEFAULT_FLOAT_LAYERS`, or 0 for the grids of a QAT run, which trained its
    first layers for int8 arithmetic too (in float they give another model: 0.25/128 on
    Imagenette 0.4 pt lower)."""
    return 0 if grids is not None and grids.qat_run else DEFAULT_FLOAT_LAYERS


def _shift_input(proto: Any, shift: float) -> None:
    """An ``Add`` of ``-shift`` before the graph input's ``QuantizeLinear``
    (:func:`~.int8.pixel_shift`: the quantized input is then the pixels it came from)."""
    onnx = require("onnx", EXTRA, "ONNX export")
    graph = proto.graph
    name = graph.input[0].name
    nodes = list(graph.node)
    index = next(i for i, n in enumerate(nodes) if n.op_type == "QuantizeLinear" and n.input[0] == name)
    constant = onnx.numpy_helper.from_array(np.array(-shift, np.float32), f"{name}_pixel_shift")
    graph.initializer.append(constant)
    nodes[index].input[0] = f"{name}_on_pixels"
    graph.node.insert(index, onnx.helper.make_node("Add", [name, constant.name], [f"{name}_on_pixels"], "pixel_input"))


def quantize_onnx(
    fp32_path: str | Path,
    path: str | Path,
    calibration: torch.Tensor,
    *,
    reference: torch.nn.Module | None = None,
    float_layers: int = DEFAULT_FLOAT_LAYERS,
    overrides: dict[str, Any] | None = None,
    mode: str | None = None,
    input_shift: float = 0.0,
) -> ExportReport:
    """Quantize the float ONNX file ``fp32_path`` to int8 at ``path``.

    ``calibration`` is a preprocessed batch (see :func:`load_batch`). The result is
    compared with ``reference`` (the float PyTorch model) on the calibration images: the
    max absolute logit difference and the top-1 agreement are reported (int8 logits
    differ by design, so there is no hard tolerance). Metadata is carried over.
    ``overrides`` fixes the quantization of named tensors (see :func:`tflite_overrides`);
    ``mode`` is what the metadata says of it (default ``tflite`` with overrides, else
    ``calibrated``, :func:`~.int8.grids_used`); ``input_shift`` moves the input down
    before it is quantized (:func:`~.int8.pixel_shift`).
    """
    onnx = require("onnx", EXTRA, "ONNX export")
    mode = mode or ("tflite" if overrides else "calibrated")
    read_metadata(fp32_path)  # a file we exported: its metadata is carried over
    with atomic_write(path) as tmp:
        _quantize(Path(fp32_path), tmp, calibration, float_layers, overrides)
        proto = onnx.load(str(tmp))
        if input_shift:
            _shift_input(proto, input_shift)
        source = onnx.load(str(fp32_path))
        props = {p.key: p.value for p in source.metadata_props}
        props["mobilenet_v1.format"] = "onnx-int8"
        props["mobilenet_v1.float_layers"] = str(float_layers)
        props["mobilenet_v1.quantization"] = mode
        set_metadata(proto, props)
        onnx.save(proto, str(tmp))
        if reference is not None:
            diff, agree = compare_with_torch(OnnxModel(tmp), reference.eval(), calibration)
        else:
            diff, agree = float("nan"), float("nan")
    checked = f"{len(calibration)} calibration images, {mode} quantization"
    return ExportReport(Path(path), "onnx-int8", diff, agree, checked)


def export_int8(
    model: MobileNetV1,
    path: str | Path,
    preprocessing: Preprocessing,
    calibration: torch.Tensor,
    *,
    labels: Sequence[str] | None = None,
    grids: Int8Grids | None = None,
    float_layers: int | None = None,
    qat_steps: int = 0,
) -> ExportReport:
    """``model`` to a static int8 ONNX file at ``path``: the one int8 export path.

    Layers that still lie on ``grids`` (:func:`~mobilenet_v1.weights.grids.int8_grids`)
    keep them; the rest is calibrated on ``calibration`` (a preprocessed batch; biases
    corrected, :func:`~mobilenet_v1.weights.grids.correct_biases`), after ``qat_steps`` of quantization-aware
    fine-tuning on it when asked (refused while layers keep Google's grids,
    :func:`~.int8.check_qat_grids`). The result is compared with ``model`` on the
    calibration images.
    """
    if float_layers is None:
        float_layers = default_float_layers(grids)
    if float_layers < 0:
        raise ValueError(f"float_layers={float_layers}: must be >= 0")
    check_qat_grids(model, grids, qat_steps)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        tuned = qat_finetune(model, calibration, steps=qat_steps, float_layers=float_layers) if qat_steps else model
        folded = fuse_bn(tuned)
        keep = layers_on_grids(folded, grids) if grids is not None else [False] * len(quantized_layers(folded))
        calibrated = [not kept and index >= float_layers for index, kept in enumerate(keep)]
        corrected = correct_biases(folded, calibration, per_channel_int8, calibrated)
        export_onnx(corrected, fp32, preprocessing, labels=labels)  # what gets quantized; compared with `model`
        overrides = tflite_overrides(fp32, grids, keep) if grids is not None and any(keep) else None
        return quantize_onnx(
            fp32, path, calibration, reference=model, float_layers=float_layers, overrides=overrides,
            mode=grids_used(keep), input_shift=pixel_shift(grids, keep) if float_layers == 0 else 0.0,
        )  # fmt: skip
