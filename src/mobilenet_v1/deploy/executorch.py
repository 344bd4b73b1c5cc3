"""Export to ExecuTorch (``.pte``) lowered to XNNPACK: float32, or int8 with PT2E.

ExecuTorch is PyTorch's on-device runtime (Android, iOS, embedded); XNNPACK is its CPU
backend, the same kernels LiteRT runs on a phone. The folded model (Section 3.1's
conv-BN-ReLU as conv+bias+ReLU) is ``torch.export``-ed with a dynamic batch and every
layer is delegated to XNNPACK; a layer XNNPACK cannot take is an error, not a silent
fallback to ExecuTorch's slow portable kernels. int8 is PyTorch's PT2E flow with
XNNPACK's quantizer: int8 weights per output channel (symmetric), int8 activations per
tensor from their min/max over calibration images
(:func:`~mobilenet_v1.deploy.quantize.load_batch`), each convolution and its ReLU or
ReLU6 quantized as one op (:func:`_annotate_activations`).

The labels and preprocessing travel inside the program, as a constant method
(``mobilenet_v1_metadata``, returning :func:`~.common.metadata_props` as JSON) that the
runtime can call without running the network. The file is untrusted input when read:
bounded size, ExecuTorch's identifier and the seal the export appends (the program's
sha256, :func:`seal`) checked before the runtime sees it, the metadata checked as every
format's is (:func:`~.common.check_metadata`), and the runtime's own log lines kept off
the terminal (one line per error).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.transforms import Preprocessing
from ..files import atomic_write
from ..fold import fuse_bn
from ..model import MobileNetV1
from ..optional import require
from ..untrusted import parse_json, printable, read_bounded
from ..weights import LoadedWeights
from ..weights.grids import Grid, Int8Grids, correct_biases, layers_on_grids, quantized_layers
from .common import (
    FP32_TOLERANCE,
    ExportReport,
    captured_stderr,
    check_metadata,
    compare_with_torch,
    loaded_weights,
    metadata_props,
    random_inputs,
)
from .int8 import grids_used, int8_weight_steps, per_channel_int8, pixel_shift

__all__ = ["ExecuTorchModel", "export_executorch", "load_executorch"]

METADATA_METHOD = "mobilenet_v1_metadata"
MAX_PTE_BYTES = 256 << 20  # a 1.0/224 float32 program is ~17 MB
SEAL = b"mobilenet_v1.sha256"  # after the program: this marker, then the program's sha256
# what a fully delegated graph may call outside XNNPACK: the delegate, and reshapes of a dynamic batch
OUTSIDE_OPS = ("executorch_call_delegate", "getitem", "sym_size", "view_copy")
MAX_BATCH = 16  # the runtime plans its memory for the largest batch; larger batches run in chunks
EXTRA = "mobile"  # pip install 'mobilenet-v1[mobile]'
_CONVS = (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)
_ACTIVATIONS = (torch.ops.aten.relu.default, torch.ops.aten.relu_.default, torch.ops.aten.hardtanh.default,
                torch.ops.aten.hardtanh_.default)  # fmt: skip
_LINEAR = torch.ops.aten.linear.default
_POOLED = (torch.ops.aten.mean.dim, torch.ops.aten.flatten.using_ints)  # the pooled features and their flattening


class _Lowerable(nn.Module):
    """The model with its global average pooling kept 4-D (``keepdim``), the form
    XNNPACK's mean takes; the same arithmetic as ``MobileNetV1.forward``. An int8 input
    on its kept grid is first moved ``input_shift`` down, so that it is quantized to the
    uint8 pixels it came from (:func:`~.int8.pixel_shift`)."""

    def __init__(self, model: MobileNetV1, input_shift: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.input_shift = input_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_shift:
            x = x - self.input_shift
        pooled = self.model.forward_features(x).mean((2, 3), keepdim=True).flatten(1)
        return self.model.classifier(pooled)


def _batch_dim() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def _annotate_activations(graph: torch.fx.Graph, config: Any) -> None:
    """Quantize each convolution and the ReLU or ReLU6 after it as one op: observed after
    the activation, as Google's int8 files quantize Section 3.1's conv-BN-ReLU6.

    XNNPACK's quantizer does so for ReLU only. After a ReLU6 it observes the convolution's
    output, whose pre-activation range is wide (-17 to 47 after a pointwise layer of
    0.25/128), and the ReLU6 shares that grid: some 24 of its 256 levels fall in [0, 6],
    and Google's 0.25/128 lost 0.9 pt of top-1 (docs/deployment.md). The zero padding of
    a SAME stride-2 layer keeps its input's grid (zero lies on it): no second rounding.
    """
    spec = _require("torchao.quantization.pt2e.quantizer")
    key = spec.quantizer.Q_ANNOTATION_KEY  # where PT2E's quantizers annotate a node
    quantized: set[torch.fx.Node] = set()  # activations given their own grid
    for act in graph.nodes:
        conv = act.args[0] if act.op == "call_function" and act.target in _ACTIVATIONS else None
        if not isinstance(conv, torch.fx.Node) or conv.target not in _CONVS or len(conv.users) > 1:
            continue
        x, weight, bias = (*conv.args[:3], None)[:3]  # a convolution without bias: None
        padded = x.op == "call_function" and x.target == torch.ops.aten.pad.default and x.args[0] in quantized
        inputs = {
            x: spec.SharedQuantizationSpec(x.args[0]) if padded else spec.get_input_act_qspec(config),
            weight: spec.get_weight_qspec(config),
        }
        if isinstance(bias, torch.fx.Node):
            inputs[bias] = spec.get_bias_qspec(config)
        conv.meta[key] = spec.QuantizationAnnotation(input_qspec_map=inputs, _annotated=True)
        act.meta[key] = spec.QuantizationAnnotation(output_qspec=spec.get_output_act_qspec(config), _annotated=True)
        quantized.add(act)


def _quantizer() -> Any:
    """XNNPACK's quantizer (per-channel symmetric int8 weights, int8 activations), with
    :func:`_annotate_activations` first; it quantizes the rest (pooling, classifier).

    Activations take their min/max range, not XNNPACK's default histogram search: once
    observed after the activation, each range is bounded ([0, 6] after ReLU6, as Google's
    grids are) and clipping its top cost top-1 agreement with float (docs/deployment.md).
    """
    xnnpack = _require("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
    observer = _require("torchao.quantization.pt2e.observer")
    config = xnnpack.get_symmetric_quantization_config(is_per_channel=True)
    minmax = observer.MinMaxObserver.with_args(eps=2**-12)  # the smallest scale, as XNNPACK configures
    activations = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=minmax)
    config = dataclasses.replace(config, input_activation=activations, output_activation=activations)

    class Quantizer(xnnpack.XNNPACKQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            _annotate_activations(model.graph, config)
            return super().annotate(model)  # skips the nodes annotated above

    return Quantizer().set_global(config)


def _quantize(model: nn.Module, calibration: torch.Tensor, grids: Int8Grids | None, keep: Sequence[bool]) -> nn.Module:
    """PT2E: observers placed by :func:`_quantizer`, calibrated, the layers ``keep`` names
    given their ``grids`` (:func:`_kept_ranges`), converted to q/dq form."""
    pt2e = _require("torchao.quantization.pt2e.quantize_pt2e")
    quantizer = _quantizer()
    example = (calibration[:2],)
    prepared = pt2e.prepare_pt2e(torch.export.export(model, example, dynamic_shapes=_batch_dim()).module(), quantizer)
    with torch.no_grad():
        for batch in calibration.split(16):
            prepared(batch)
    if grids is not None and any(keep):
        _kept_ranges(prepared, grids, keep)
    return pt2e.convert_pt2e(prepared)


def _kept_ranges(prepared: torch.fx.GraphModule, grids: Int8Grids, keep: Sequence[bool]) -> None:
    """Set the observed ranges of the layers ``keep`` names so that their parameters are
    ``grids``' (:mod:`.int8`): a uint8 activation grid ``(s, z)`` is the int8 grid
    ``(s, z - 128)``, the range ``[-s z, s (255 - z)]``; a weight grid the symmetric
    per-channel steps of :func:`~.int8.int8_weight_steps`, the range ``127`` steps either
    way. The padding before a stride-2 layer and the pooled features follow their inputs,
    as Google's files have them."""
    layers = [n for n in prepared.graph.nodes if n.op == "call_function" and n.target in (*_CONVS, _LINEAR)]
    if len(layers) != len(grids.weights):
        raise ValueError(f"the program has {len(layers)} layers, {grids.source} {len(grids.weights)}")

    def observer(node: torch.fx.Node) -> Any:
        return prepared.get_submodule(str(node.target))

    def activation(node: torch.fx.Node, grid: Grid) -> None:
        obs, low, high = observer(node), -grid.scale * grid.zero_point, grid.scale * (255 - grid.zero_point)
        obs.min_val, obs.max_val = torch.tensor(low), torch.tensor(high)

    def output(node: torch.fx.Node) -> torch.fx.Node:
        (user,) = node.users  # the activation after a convolution, or the observer after the classifier
        return next(iter(user.users)) if user.op == "call_function" else user

    for node, w, y, kept in zip(layers, grids.weights, grids.outputs, keep, strict=True):
        if not kept:
            continue
        weights = prepared.get_parameter(str(node.args[1].args[0].target)).detach().numpy()
        steps = torch.from_numpy(int8_weight_steps(w, weights))
        obs = observer(node.args[1])
        obs.min_val, obs.max_val = -127 * steps, 127 * steps
        activation(output(node), y)
    if keep[0]:
        activation(layers[0].args[0], grids.input)
    if keep[-2]:
        for node in prepared.graph.nodes:
            if node.op == "call_module" and node.args[0].target in _POOLED:
                activation(node, grids.pool)
    for node in prepared.graph.nodes:  # a padding keeps its input's grid (zero lies on it)
        if node.op == "call_module" and node.args[0].target == torch.ops.aten.pad.default:
            source = node.args[0].args[0]
            if source.op == "call_module":
                obs, src = observer(node), observer(source)
                obs.min_val, obs.max_val = src.min_val.clone(), src.max_val.clone()


def _lower(module: torch.nn.Module, resolution: int, metadata: dict[str, str]) -> bytes:
    """``torch.export`` (dynamic batch), every layer delegated to XNNPACK, serialized."""
    exir = _require("executorch.exir")
    partitioner = _require("executorch.backends.xnnpack.partition.xnnpack_partitioner")
    example = (torch.randn(2, 3, resolution, resolution),)
    program = torch.export.export(module, example, dynamic_shapes=_batch_dim())
    edge = exir.to_edge_transform_and_lower(
        program,
        partitioner=[partitioner.XnnpackPartitioner()],
        constant_methods={METADATA_METHOD: json.dumps(metadata)},
    )
    graph = edge.exported_program().graph
    names = {getattr(n.target, "__name__", str(n.target)) for n in graph.nodes if n.op == "call_function"}
    left = sorted(name for name in names if not any(op in name for op in OUTSIDE_OPS))
    if left:
        raise ValueError(f"XNNPACK cannot take every layer of this model (left: {', '.join(left)})")
    return edge.to_executorch().buffer


def export_executorch(
    model: MobileNetV1,
    path: str | Path,
    preprocessing: Preprocessing,
    *,
    labels: Sequence[str] | None = None,
    int8: bool = False,
    calibration: torch.Tensor | None = None,
    grids: Int8Grids | None = None,
) -> ExportReport:
    """``model`` to an ExecuTorch program at ``path`` (``.pte``), lowered to XNNPACK.

    float32 is checked against the folded PyTorch model on ``calibration`` (or 4 random
    images): max |logit diff| <= ``FP32_TOLERANCE``, else ``ValueError`` and nothing is
    written. int8 needs ``calibration`` (a preprocessed batch, e.g. 100-200 images) and
    reports its difference and top-1 agreement with the float model on it; the layers
    that lie on ``grids`` (Google's or a QAT checkpoint's,
    :func:`~mobilenet_v1.weights.grids.int8_grids`) keep them (:mod:`.int8`).
    """
    if int8 and (calibration is None or len(calibration) == 0):
        raise ValueError("an int8 ExecuTorch export needs calibration images")
    folded = fuse_bn(model)
    res = preprocessing.resolution
    given = calibration is not None
    inputs = calibration if given else random_inputs(res)
    fmt = "executorch-int8" if int8 else "executorch"
    meta = metadata_props(preprocessing, labels, folded.config, fmt)
    keep = layers_on_grids(folded, grids) if grids is not None else [False] * len(quantized_layers(folded))
    if int8:  # the calibrated layers' biases corrected for their per-channel weight grids
        meta["mobilenet_v1.quantization"] = grids_used(keep)
        corrected = correct_biases(folded, inputs, per_channel_int8, [not kept for kept in keep])
        module = _quantize(_Lowerable(corrected, pixel_shift(grids, keep)).eval(), inputs, grids, keep)
    else:
        module = _Lowerable(folded).eval()
    buffer = _lower(module, res, meta)
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(seal(buffer))
        diff, agree = compare_with_torch(ExecuTorchModel(tmp, metadata=False), folded, inputs)
        if not int8 and not diff <= FP32_TOLERANCE:
            raise ValueError(f"exported program differs from PyTorch: max |logit diff| {diff:.3g} > {FP32_TOLERANCE:g}")
    return ExportReport(Path(path), fmt, diff, agree, f"{len(inputs)} {'calibration' if given else 'random'} inputs")


def _require(module: str) -> Any:
    """``require`` for ExecuTorch and torchao modules: importing them makes torch's pytree
    registry log a deprecation warning on stderr, a line that is not ours to print."""
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        return require(module, EXTRA, "ExecuTorch")
    finally:
        pytree_log.setLevel(level)


def seal(program: bytes) -> bytes:
    """The program followed by :data:`SEAL` and its sha256: what an exported ``.pte`` holds.

    ExecuTorch ignores bytes after a program; the loader checks them (:func:`unseal`), so
    a file that was damaged after export (a flipped bit, a cut) is refused in one line
    before the runtime parses it. The runtime is not hardened against such input: a
    corrupt XNNPACK payload can make it log bytes that are not UTF-8, which aborts the
    process inside its Python bindings."""
    return program + SEAL + hashlib.sha256(program).digest()


def unseal(path: Path, data: bytes) -> bytes:
    """The program inside ``data``, if its seal is intact, else a one-line ``ValueError``."""
    body, marker, digest = data[: -len(SEAL) - 32], data[-len(SEAL) - 32 : -32], data[-32:]
    if len(data) < len(SEAL) + 32 or marker != SEAL:
        raise ValueError(
            f"{path}: no integrity seal (exported by another tool or an older mobilenet-v1? export it again)"
        )
    if hashlib.sha256(body).digest() != digest:
        raise ValueError(f"{path}: corrupt ExecuTorch program (its sha256 does not match the seal)")
    return body


def _load_program(path: Path) -> Any:
    data = unseal(path, read_bounded(path, "ExecuTorch program", MAX_PTE_BYTES, b"ET12"))
    runtime = _require("executorch.runtime")
    with captured_stderr() as log:
        try:
            program = runtime.Runtime.get().load_program(data)
            return program, program.load_method("forward")
        except (RuntimeError, ValueError) as exc:
            failure = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    reason = printable((log[-1] if log else failure)[:200])
    raise ValueError(f"cannot load ExecuTorch program {path} (truncated or corrupt?): {reason}")


class ExecuTorchModel:
    """A ``.pte`` under ExecuTorch's runtime (XNNPACK on ``threads`` threads: the
    runtime's one thread pool) as a ``batch -> logits`` callable, as
    :class:`~mobilenet_v1.deploy.onnx.OnnxModel` is for ONNX Runtime. ``metadata`` reads
    our metadata (labels, preprocessing), which an exported file always has."""

    def __init__(self, path: str | Path, threads: int = 2, *, metadata: bool = True) -> None:
        pybindings = _require("executorch.extension.pybindings.portable_lib")
        with captured_stderr():  # creating the thread pool logs what it finds of the CPU
            if pybindings._threadpool_get_thread_count() != threads:
                pybindings._unsafe_reset_threadpool(threads)
        self.path = Path(path)
        self.program, self.method = _load_program(self.path)
        self.max_batch = max(1, int(self.method.metadata.input_tensor_meta(0).sizes()[0]))
        self.metadata = self._metadata() if metadata else {}

    def _metadata(self) -> dict[str, Any]:
        """The checked metadata (:func:`~.common.check_metadata`) the program's metadata method returns."""
        if METADATA_METHOD not in self.program.method_names:
            raise ValueError(f"{self.path}: no mobilenet_v1 metadata (was it exported by `mobilenet-v1 export`?)")
        raw = self.program.load_method(METADATA_METHOD).execute([])[0]
        props = parse_json(str(raw), what=f"{self.path}: '{METADATA_METHOD}'", max_depth=1)
        if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
            raise ValueError(f"{self.path}: bad '{METADATA_METHOD}' (expected a JSON object of strings)")
        shape = list(self.method.metadata.output_tensor_meta(0).sizes())
        return check_metadata(props, int(shape[-1]) if shape else None, self.path)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        chunks = batch.float().split(self.max_batch)
        outs = [self.method.execute([chunk.contiguous()])[0] for chunk in chunks]
        return outs[0] if len(outs) == 1 else torch.cat(outs)


def load_executorch(path: str | Path, threads: int = 2) -> tuple[ExecuTorchModel, LoadedWeights]:
    """``(model, info)`` like ``weights.load_weights``, from the program's metadata."""
    model = ExecuTorchModel(path, threads)
    return model, loaded_weights(model.metadata, path)
