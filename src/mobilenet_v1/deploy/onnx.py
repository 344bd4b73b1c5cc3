"""Export to ONNX: batch norm folded, dynamic batch, numerics checked, metadata inside.

The exported graph is the deployment form of Table 1: each convolution carries its
folded batch norm as a bias (Section 3.1's conv-BN-ReLU becomes conv+bias then Clip for
ReLU6), TensorFlow "SAME" padding becomes the convolution's own asymmetric pads, and
the batch dimension is dynamic. ``dynamic_size=True`` makes the height and width dynamic
too (the resolution multiplier rho of Section 3.4 chosen at run time): the SAME pads are
then computed in the graph from the input's shape instead of folded into each Conv. The
labels and the preprocessing recipe travel in the file's ``metadata_props`` so that
``mobilenet-v1 eval --model`` needs nothing else.

Every file is written through ``files.atomic_write`` and renamed into place only once
it is complete and checked, so a failure never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import MIN_INPUT_SIZE, MobileNetV1Config
from ..data.transforms import Preprocessing
from ..files import atomic_write
from ..model import MobileNetV1
from ..untrusted import parse_json, printable
from ..weights import LoadedWeights
from ..weights.io import check_preprocessing
from .fold import fuse_bn

__all__ = [
    "FP32_TOLERANCE",
    "ExportReport",
    "OnnxModel",
    "dynamic_shapes",
    "export_onnx",
    "export_program",
    "load_onnx",
    "onnx_session",
    "read_metadata",
    "save_onnx_graph",
]

FP32_TOLERANCE = 1e-4  # max |logit difference| allowed between PyTorch and ORT in float32
META_PREFIX = "mobilenet_v1."
MAX_BATCH = 4096  # upper bounds of the dynamic dimensions (torch.export needs finite ranges)
MAX_SIZE = 4096


@dataclass(frozen=True)
class ExportReport:
    """What an export produced: the file, its precision and the numerics check (the largest
    absolute difference of ``compared``, logits or probabilities, from float PyTorch)."""

    path: Path
    format: str
    max_abs_diff: float
    top1_agreement: float
    checked_on: str
    compared: str = "logit"

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


def require(module: str, extra: str = "export") -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ImportError(f"{module} is needed for export: pip install 'mobilenet-v1[{extra}]'") from None


def metadata_props(
    preprocessing: Preprocessing,
    labels: Sequence[str] | None,
    config: MobileNetV1Config,
    fmt: str,
    *,
    dynamic_size: bool = False,
) -> dict[str, str]:
    """The string metadata stored in every exported file (read back by :func:`read_metadata`)."""
    props = {
        "preprocessing": json.dumps(preprocessing.to_dict()),
        "config": json.dumps(config.to_dict()),
        "format": fmt,
        "input_layout": "NCHW float32, RGB, normalized as in preprocessing",
        "dynamic_size": json.dumps(dynamic_size),  # "true": any height/width >= 32, not only the resolution
    }
    if labels is not None:
        props["labels"] = json.dumps(list(labels))
    return {META_PREFIX + k: v for k, v in props.items()}


def set_metadata(onnx_model: Any, props: dict[str, str]) -> None:
    existing = {p.key: p for p in onnx_model.metadata_props}
    for key, value in props.items():
        entry = existing.get(key) or onnx_model.metadata_props.add()
        entry.key, entry.value = key, value


def onnx_session(path: str | Path, threads: int = 2, *, profile: str | None = None, spin: bool = True) -> Any:
    """An ONNX Runtime CPU session tuned for latency: all graph optimizations (conv+Clip
    fusion, NCHWc layout for float, NHWC for int8), ``threads`` intra-op threads,
    sequential execution. ``spin=False`` makes idle worker threads sleep instead of spin
    (better when other processes share the cores). A missing or corrupt file raises a
    one-line ``ValueError``."""
    ort = require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.log_severity_level = 3  # keep ORT's warnings off the one-line error channel
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for corrupt files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot load ONNX model {path} (truncated or not an ONNX file?): {reason}") from None


def read_metadata(source: str | Path | Any, *, name: str | Path | None = None) -> dict[str, Any]:
    """The metadata of an exported file (or open session, ``name`` naming it in errors):
    preprocessing, labels, config, dynamic size, and the other strings as they are.

    The file is untrusted input: each JSON value is parsed with bounded size and depth
    (:func:`~mobilenet_v1.untrusted.parse_json`), the preprocessing is checked as a weights
    file's is, the labels must be as many strings as the graph has outputs (and the
    config's ``num_classes`` agree with them), and every string is made printable. Any
    disagreement is a one-line ``ValueError`` naming the file and the key.
    """
    session = source if hasattr(source, "get_modelmeta") else onnx_session(source, threads=1)
    where = str(name if name is not None else source if not hasattr(source, "get_modelmeta") else "ONNX model")
    props = session.get_modelmeta().custom_metadata_map
    meta = {k[len(META_PREFIX) :]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    if "preprocessing" not in meta:
        raise ValueError(f"{where}: no mobilenet_v1 metadata (was it exported by `mobilenet-v1 export`?)")
    out: dict[str, Any] = {printable(k): printable(v) for k, v in meta.items()}
    out["preprocessing"] = _metadata_preprocessing(where, meta["preprocessing"])
    config = _metadata_json(where, meta, "config", "{}", dict)
    labels = _metadata_json(where, meta, "labels", "null", list | None)
    dynamic = _metadata_json(where, meta, "dynamic_size", "false", bool)  # files from before the option: static
    num_classes = config.get("num_classes")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise ValueError(f"{where}: bad 'config' metadata (num_classes must be an integer, got {num_classes!r})")
    outputs = session.get_outputs()
    shape = outputs[0].shape if outputs else []
    width = shape[-1] if shape and isinstance(shape[-1], int) else None  # None: a symbolic size
    if width is not None and num_classes is not None and num_classes != width:
        raise ValueError(f"{where}: the metadata says {num_classes} classes, the graph has {width} outputs")
    if labels is not None:
        if not all(isinstance(label, str) for label in labels):
            raise ValueError(f"{where}: bad 'labels' metadata (expected a list of strings)")
        expected = width if width is not None else num_classes
        if expected is not None and len(labels) != expected:
            raise ValueError(f"{where}: {len(labels)} labels in the metadata for the graph's {expected} outputs")
        labels = [printable(label) for label in labels]
    out["config"], out["labels"], out["dynamic_size"], out["outputs"] = config, labels, dynamic, width
    return out


def _metadata_json(where: str, meta: dict[str, str], key: str, default: str, kind: Any) -> Any:
    value = parse_json(meta.get(key, default), what=f"{where}: '{key}' metadata", max_depth=2)
    if not isinstance(value, kind):
        raise ValueError(f"{where}: bad '{key}' metadata (got a JSON {type(value).__name__})")
    return value


def _metadata_preprocessing(where: str, text: str) -> Preprocessing:
    data = parse_json(text, what=f"{where}: 'preprocessing' metadata", max_depth=2)
    try:
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        return check_preprocessing(Preprocessing.from_dict(data))
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise ValueError(f"{where}: bad 'preprocessing' metadata ({printable(exc)})") from None


def dynamic_shapes(dynamic_size: bool = True) -> tuple[dict[int, Any]]:
    """``dynamic_shapes`` for ``torch.export`` of a model's one (N, 3, H, W) input: the
    batch always, the height and width (any size >= 32, Section 3.4) with ``dynamic_size``."""
    dims = {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}
    if dynamic_size:
        dims[2] = torch.export.Dim("height", min=MIN_INPUT_SIZE, max=MAX_SIZE)
        dims[3] = torch.export.Dim("width", min=MIN_INPUT_SIZE, max=MAX_SIZE)
    return (dims,)


@contextlib.contextmanager
def _size_oblivious(enabled: bool = True) -> Iterator[None]:
    """Trace a dynamic height/width without specializing on the last feature map's size.

    A 32-pixel input leaves a 1x1 map at stride 32, so PyTorch's contiguity check of that
    convolution's output (``_prims_common.check_contiguous_sizes_strides``, run while
    recording tensor metadata) asks whether the size is 1 and guards on the answer, which
    ``torch.export`` then rejects for the range [32, ...]. Size-oblivious reasoning answers
    "not 1" without a guard; the check only affects metadata, never the computation."""
    if not enabled:
        yield
        return
    from torch.fx.experimental import _config as fx_config

    with fx_config.patch(backed_size_oblivious=True):
        yield


def export_program(
    model: nn.Module, resolution: int = 224, *, dynamic_size: bool = True
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` (put it in eval mode first) with a dynamic batch and,
    with ``dynamic_size``, a dynamic height and width in [32, 4096]: the program follows
    the input's size (SAME pads included) as eager PyTorch does. ``resolution`` is only
    the example input's size (and the fixed one without ``dynamic_size``)."""
    example = torch.randn(2, 3, resolution, resolution)
    with _size_oblivious(dynamic_size):
        return torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes(dynamic_size))


def save_onnx_graph(model: nn.Module, path: Path, resolution: int, *, dynamic_size: bool = False) -> None:
    """torch.export-based ONNX export; with a static height and width the SAME pads are
    constants, which the exporter's optimizer folds into each Conv's ``pads``; with
    ``dynamic_size`` they are computed from the input's shape (Shape, Div, Pad)."""
    require("onnxscript")
    example = torch.randn(2, 3, resolution, resolution)
    with warnings.catch_warnings(), _size_oblivious(dynamic_size):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=dynamic_shapes(dynamic_size),
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    program.save(str(path))


def check_sizes(resolution: int) -> list[tuple[int, int]]:
    """The two other (height, width) a dynamic-size export is checked at besides the
    resolution: odd, non-square, one above and one below it (never under 32)."""
    low = max(MIN_INPUT_SIZE, resolution * 3 // 4 + 1)
    return [(resolution + 33, low), (low + 2, resolution + 1)]


@torch.no_grad()
def compare_with_torch(exported: OnnxModel, model: nn.Module, inputs: torch.Tensor) -> tuple[float, float]:
    """Max absolute logit difference and top-1 agreement, ORT vs PyTorch, on ``inputs``."""
    ours = exported(inputs)
    ref = model(inputs)
    return float((ours - ref).abs().max()), float((ours.argmax(1) == ref.argmax(1)).float().mean())


def export_onnx(
    model: MobileNetV1,
    path: str | Path,
    preprocessing: Preprocessing,
    *,
    labels: Sequence[str] | None = None,
    check_inputs: torch.Tensor | None = None,
    tolerance: float = FP32_TOLERANCE,
    dynamic_size: bool = False,
) -> ExportReport:
    """Export ``model`` to a float32 ONNX file with BN folded and a dynamic batch.

    ``dynamic_size=True`` also makes the height and width dynamic (any size >= 32); the
    default keeps them at the preprocessing's resolution, which lets the exporter fold
    the SAME pads into each Conv. The file is checked against PyTorch on ``check_inputs``
    (default: 4 random images at the preprocessing's resolution), and when dynamic also
    at two other sizes (:func:`check_sizes`); a max absolute logit difference above
    ``tolerance`` raises ``ValueError`` and nothing is written. The file's metadata
    records ``dynamic_size``.
    """
    onnx = require("onnx")
    folded = fuse_bn(model)
    res = preprocessing.resolution
    inputs = (
        check_inputs
        if check_inputs is not None
        else torch.randn(4, 3, res, res, generator=torch.Generator().manual_seed(0))
    )
    batches = [inputs]
    if dynamic_size:
        generator = torch.Generator().manual_seed(1)
        batches += [torch.randn(2, 3, h, w, generator=generator) for h, w in check_sizes(res)]
    with atomic_write(path) as tmp:
        save_onnx_graph(folded, tmp, res, dynamic_size=dynamic_size)
        proto = onnx.load(str(tmp))
        set_metadata(proto, metadata_props(preprocessing, labels, folded.config, "fp32", dynamic_size=dynamic_size))
        onnx.save(proto, str(tmp))
        exported = OnnxModel(tmp, metadata=False)
        results = [compare_with_torch(exported, folded, batch) for batch in batches]
        diff = max(d for d, _ in results)
        agree = sum(a * len(b) for (_, a), b in zip(results, batches, strict=True)) / sum(len(b) for b in batches)
        if not diff <= tolerance:
            raise ValueError(f"exported model differs from PyTorch: max |logit diff| {diff:.3g} > {tolerance:g}")
    checked = f"{len(inputs)} {'given' if check_inputs is not None else 'random'} inputs"
    if dynamic_size:
        checked += " and 2 random at each of " + ", ".join(f"{h}x{w}" for h, w in check_sizes(res))
    return ExportReport(Path(path), "onnx", diff, agree, checked)


class OnnxModel:
    """A file under ONNX Runtime (:func:`onnx_session`) as a ``batch -> logits`` callable:
    the one wrapper every caller uses. ``metadata`` reads our metadata (labels,
    preprocessing) from the file, which an exported file always has."""

    def __init__(self, path: str | Path, threads: int = 2, *, spin: bool = True, metadata: bool = True) -> None:
        self.session = onnx_session(path, threads, spin=spin)
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = read_metadata(self.session, name=path) if metadata else {}

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits of a float32 NCHW array."""
        return self.session.run(None, {self.input_name: batch})[0]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(batch.float().numpy()))


def load_onnx(path: str | Path, threads: int = 2) -> tuple[OnnxModel, LoadedWeights]:
    """``(model, info)`` like ``weights.load_weights``, from an exported file's metadata."""
    model = OnnxModel(path, threads)
    meta = model.metadata
    count = meta["outputs"] if meta["outputs"] is not None else meta["config"].get("num_classes")
    if meta["labels"] is None and count is None:
        raise ValueError(f"{path}: neither labels in the metadata nor a fixed number of outputs in the graph")
    classes = meta["labels"] if meta["labels"] is not None else [str(i) for i in range(count)]
    strings = {k: v for k, v in meta.items() if isinstance(v, str)}
    return model, LoadedWeights(classes, meta["preprocessing"], strings)
