"""Export to ONNX: batch norm folded, dynamic batch, numerics checked, metadata inside.

The exported graph is the deployment form of Table 1: each convolution carries its
folded batch norm as a bias (Section 3.1's conv-BN-ReLU becomes conv+bias then Clip for
ReLU6), TensorFlow "SAME" padding becomes the convolution's own asymmetric pads, and
the batch dimension is dynamic. The labels and the preprocessing recipe travel in the
file's ``metadata_props`` so that ``mobilenet-v1 eval --model`` needs nothing else.

Every file is written to a temporary name beside the target and renamed only once it
is complete and checked, so a failure never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model import ConvBNAct, MobileNetV1, MobileNetV1Config
from .transforms import Preprocessing

__all__ = [
    "FP32_TOLERANCE",
    "ExportReport",
    "OnnxModel",
    "atomic_output",
    "export_onnx",
    "fuse_bn",
    "load_onnx",
    "onnx_session",
    "read_metadata",
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


def _require(module: str, extra: str = "export") -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ImportError(f"{module} is needed for export: pip install 'mobilenet-v1[{extra}]'") from None


@torch.no_grad()
def fuse_bn(model: MobileNetV1) -> MobileNetV1:
    """A copy of ``model`` with every BatchNorm folded into the conv before it.

    ``w' = w * gamma / sqrt(var + eps)``, ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``:
    inference-time BN is an affine map per channel, so it merges into the convolution
    exactly. The copy has ``folded_bn=True`` (the form of Google's TFLite models); an
    already folded model is simply copied.
    """
    folded = copy.deepcopy(model).eval()
    if model.config.folded_bn:
        return folded
    for module in folded.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            conv, bn = module.conv, module.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * scale)
            module.bn = nn.Identity()
    folded.config = MobileNetV1Config(**{**model.config.to_dict(), "folded_bn": True})
    return folded


def check_writable(path: str | Path) -> Path:
    """Fail early (one line) when ``path`` cannot be written, before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output path is a directory: {path}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"output path is not writable: {path}")
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success."""
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent or ".")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


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
    ort = _require("onnxruntime")
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


def _torch_export(model: nn.Module, path: Path, resolution: int) -> None:
    """torch.export-based ONNX export; with a static height and width the SAME pads are
    constants, which the exporter's optimizer folds into each Conv's ``pads``."""
    _require("onnxscript")
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
def compare_with_torch(session: Any, model: nn.Module, inputs: torch.Tensor) -> tuple[float, float]:
    """Max absolute logit difference and top-1 agreement, ORT vs PyTorch, on ``inputs``."""
    ours = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0])
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
    onnx = _require("onnx")
    folded = fuse_bn(model)
    res = preprocessing.resolution
    inputs = (
        check_inputs
        if check_inputs is not None
        else torch.randn(4, 3, res, res, generator=torch.Generator().manual_seed(0))
    )
    with atomic_output(path) as tmp:
        _torch_export(folded, tmp, res)
        proto = onnx.load(str(tmp))
        set_metadata(proto, metadata_props(preprocessing, labels, folded.config, "fp32"))
        onnx.save(proto, str(tmp))
        diff, agree = compare_with_torch(onnx_session(tmp), folded, inputs)
        if not diff <= tolerance:
            raise ValueError(f"exported model differs from PyTorch: max |logit diff| {diff:.3g} > {tolerance:g}")
    checked = "given inputs" if check_inputs is not None else "random inputs"
    return ExportReport(Path(path), "onnx", diff, agree, f"{len(inputs)} {checked}")


class OnnxModel:
    """An exported file under ONNX Runtime as a ``batch -> logits`` callable (float input)."""

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        self.session = onnx_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = read_metadata(self.session)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: batch.float().numpy()})[0])


def load_onnx(path: str | Path, threads: int = 2) -> tuple[OnnxModel, Any]:
    """``(model, info)`` like ``weights.load_weights``, from an exported file's metadata."""
    from .weights_io import LoadedWeights

    model = OnnxModel(path, threads)
    meta = model.metadata
    classes = meta["labels"] or [str(i) for i in range(meta["config"].get("num_classes", 0))]
    strings = {k: v for k, v in meta.items() if isinstance(v, str)}
    return model, LoadedWeights(classes, meta["preprocessing"], strings)
