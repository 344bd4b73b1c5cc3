"""Export to ONNX: batch norm folded, dynamic batch, numerics checked, metadata inside.

The exported graph is the deployment form of Table 1: each convolution carries its
folded batch norm as a bias (Section 3.1's conv-BN-ReLU becomes conv+bias then Clip for
ReLU6), TensorFlow "SAME" padding becomes the convolution's own asymmetric pads, and
the batch dimension is dynamic. The labels and the preprocessing recipe travel in the
file's ``metadata_props`` so that ``mobilenet-v1 eval --model`` needs nothing else.

Every file is written through ``files.atomic_write`` and renamed into place only once
it is complete and checked, so a failure never leaves a partial file behind.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.transforms import Preprocessing
from ..files import atomic_write
from ..model import MobileNetV1, MobileNetV1Config
from ..weights import LoadedWeights
from .fold import fuse_bn

__all__ = [
    "FP32_TOLERANCE",
    "ExportReport",
    "OnnxModel",
    "export_onnx",
    "load_onnx",
    "onnx_session",
    "read_metadata",
    "save_onnx_graph",
]

FP32_TOLERANCE = 1e-4  # max |logit difference| allowed between PyTorch and ORT in float32
META_PREFIX = "mobilenet_v1."


@dataclass(frozen=True)
class ExportReport:
    """What an export produced: the file, its precision and the numerics check."""

    path: Path
    format: str
    max_abs_diff: float
    top1_agreement: float
    checked_on: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


def require(module: str, extra: str = "export") -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ImportError(f"{module} is needed for export: pip install 'mobilenet-v1[{extra}]'") from None


def metadata_props(
    preprocessing: Preprocessing, labels: Sequence[str] | None, config: MobileNetV1Config, fmt: str
) -> dict[str, str]:
    """The string metadata stored in every exported file (read back by :func:`read_metadata`)."""
    props = {
        "preprocessing": json.dumps(preprocessing.to_dict()),
        "config": json.dumps(config.to_dict()),
        "format": fmt,
        "input_layout": "NCHW float32, RGB, normalized as in preprocessing",
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


def read_metadata(source: str | Path | Any) -> dict[str, Any]:
    """The metadata of an exported file (or open session): preprocessing, labels, config."""
    session = source if hasattr(source, "get_modelmeta") else onnx_session(source, threads=1)
    props = session.get_modelmeta().custom_metadata_map
    meta = {k[len(META_PREFIX) :]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    if "preprocessing" not in meta:
        raise ValueError("ONNX model has no mobilenet_v1 metadata (was it exported by `mobilenet-v1 export`?)")
    out: dict[str, Any] = dict(meta)
    out["preprocessing"] = Preprocessing.from_dict(json.loads(meta["preprocessing"]))
    out["config"] = json.loads(meta.get("config", "{}"))
    out["labels"] = json.loads(meta["labels"]) if "labels" in meta else None
    return out


def save_onnx_graph(model: nn.Module, path: Path, resolution: int) -> None:
    """torch.export-based ONNX export; with a static height and width the SAME pads are
    constants, which the exporter's optimizer folds into each Conv's ``pads``."""
    require("onnxscript")
    example = torch.randn(2, 3, resolution, resolution)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    program.save(str(path))


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
) -> ExportReport:
    """Export ``model`` to a float32 ONNX file with BN folded and a dynamic batch.

    The file is checked against PyTorch on ``check_inputs`` (default: 4 random images at
    the preprocessing's resolution); a max absolute logit difference above ``tolerance``
    raises ``ValueError`` and nothing is written.
    """
    onnx = require("onnx")
    folded = fuse_bn(model)
    res = preprocessing.resolution
    inputs = (
        check_inputs
        if check_inputs is not None
        else torch.randn(4, 3, res, res, generator=torch.Generator().manual_seed(0))
    )
    with atomic_write(path) as tmp:
        save_onnx_graph(folded, tmp, res)
        proto = onnx.load(str(tmp))
        set_metadata(proto, metadata_props(preprocessing, labels, folded.config, "fp32"))
        onnx.save(proto, str(tmp))
        diff, agree = compare_with_torch(OnnxModel(tmp, metadata=False), folded, inputs)
        if not diff <= tolerance:
            raise ValueError(f"exported model differs from PyTorch: max |logit diff| {diff:.3g} > {tolerance:g}")
    checked = "given inputs" if check_inputs is not None else "random inputs"
    return ExportReport(Path(path), "onnx", diff, agree, f"{len(inputs)} {checked}")


class OnnxModel:
    """A file under ONNX Runtime (:func:`onnx_session`) as a ``batch -> logits`` callable:
    the one wrapper every caller uses. ``metadata`` reads our metadata (labels,
    preprocessing) from the file, which an exported file always has."""

    def __init__(self, path: str | Path, threads: int = 2, *, spin: bool = True, metadata: bool = True) -> None:
        self.session = onnx_session(path, threads, spin=spin)
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = read_metadata(self.session) if metadata else {}

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits of a float32 NCHW array."""
        return self.session.run(None, {self.input_name: batch})[0]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(batch.float().numpy()))


def load_onnx(path: str | Path, threads: int = 2) -> tuple[OnnxModel, LoadedWeights]:
    """``(model, info)`` like ``weights.load_weights``, from an exported file's metadata."""
    model = OnnxModel(path, threads)
    meta = model.metadata
    classes = meta["labels"] or [str(i) for i in range(meta["config"].get("num_classes", 0))]
    strings = {k: v for k, v in meta.items() if isinstance(v, str)}
    return model, LoadedWeights(classes, meta["preprocessing"], strings)
