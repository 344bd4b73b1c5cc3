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

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import MIN_INPUT_SIZE
from ..data.transforms import Preprocessing
from ..files import atomic_write
from ..fold import fuse_bn
from ..model import MobileNetV1
from ..optional import require
from ..untrusted import printable
from ..weights import LoadedWeights
from .common import (
    FP32_TOLERANCE,
    ExportReport,
    check_metadata,
    compare_with_torch,
    dynamic_shapes,
    loaded_weights,
    metadata_props,
    random_inputs,
    size_oblivious,
)

__all__ = ["OnnxModel", "export_onnx", "load_onnx", "onnx_session", "read_metadata", "save_onnx_graph"]

EXTRA = "export"


def set_metadata(onnx_model: Any, props: dict[str, str]) -> None:
    existing = {p.key: p for p in onnx_model.metadata_props}
    for key, value in props.items():
        entry = existing.get(key) or onnx_model.metadata_props.add()
        entry.key, entry.value = key, value


SPIN_ENV = "MOBILENET_V1_ORT_SPIN"  # "1" on, "0" off, else chosen per session (bench/tradeoff --ort-spin: on)


def ort_spin_setting() -> str:
    """``"on"``, ``"off"`` (``$MOBILENET_V1_ORT_SPIN`` 1 or 0) or ``"auto"``: what
    :func:`ort_spin` follows, the key under which measurements are cached."""
    return {"1": "on", "0": "off"}.get(os.environ.get(SPIN_ENV, ""), "auto")


def ort_spin(threads: int = 2) -> bool:
    """Whether the idle worker threads of a new ONNX Runtime session spin, for every
    session the project makes: ``$MOBILENET_V1_ORT_SPIN`` 1 or 0 says so; otherwise it is
    chosen by measuring the machine as the session is made: spin only when ``threads``
    cores are idle, within half a core (:func:`idle_cores`, a tenth of a second of
    /proc/stat).
    Spinning saves a wake-up per operator when the cores are free (1.0/224 float32: 13%
    faster on a quiet 2-core machine); when another process needs them it burns a core
    and a descheduled spinner stalls the next operator (31% slower beside one busy
    process), see docs/deployment.md."""
    setting = ort_spin_setting()
    if setting != "auto":
        return setting == "on"
    idle = idle_cores()
    return idle is not None and idle >= threads - 0.5


def idle_cores(seconds: float = 0.1) -> float | None:
    """How many cores were idle over ``seconds`` (/proc/stat; ``None`` where there is none)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all jiffies, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    cores = os.cpu_count() or 1
    return cores * (idle1 - idle0) / max(total1 - total0, 1)


def onnx_session(path: str | Path, threads: int = 2, *, profile: str | None = None, spin: bool | None = None) -> Any:
    """An ONNX Runtime CPU session tuned for latency: all graph optimizations (conv+Clip
    fusion, NCHWc layout for float, NHWC for int8), ``threads`` intra-op threads,
    sequential execution, idle threads spinning or not (``spin``; ``None``: :func:`ort_spin`,
    chosen by the machine's load).
    A missing or corrupt file raises a one-line ``ValueError``."""
    spin = ort_spin(threads) if spin is None else spin
    ort = require("onnxruntime", EXTRA, "ONNX Runtime")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    # ORT's own log (warnings, and an ANSI-coloured line for a file it cannot load, from its
    # default logger) stays off the one-line error channel: its exception says it all
    options.log_severity_level = 4
    ort.set_default_logger_severity(4)
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for corrupt files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"cannot load ONNX model {path} (truncated or not an ONNX file?): {printable(reason)}"
        ) from None


def read_metadata(source: str | Path | Any, *, name: str | Path | None = None) -> dict[str, Any]:
    """The checked metadata (:func:`~.common.check_metadata`) of an exported ONNX file or
    of an open session (``name`` naming it in errors)."""
    session = source if hasattr(source, "get_modelmeta") else onnx_session(source, threads=1)
    where = name if name is not None else source if not hasattr(source, "get_modelmeta") else "ONNX model"
    outputs = session.get_outputs()
    shape = outputs[0].shape if outputs else []
    width = shape[-1] if shape and isinstance(shape[-1], int) else None  # None: a symbolic size
    return check_metadata(session.get_modelmeta().custom_metadata_map, width, where)


def save_onnx_graph(model: nn.Module, path: Path, resolution: int, *, dynamic_size: bool = False) -> None:
    """torch.export-based ONNX export; with a static height and width the SAME pads are
    constants, which the exporter's optimizer folds into each Conv's ``pads``; with
    ``dynamic_size`` they are computed from the input's shape (Shape, Div, Pad)."""
    require("onnxscript", EXTRA, "ONNX export")
    example = torch.randn(2, 3, resolution, resolution)
    with warnings.catch_warnings(), size_oblivious(dynamic_size):
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
    onnx = require("onnx", EXTRA, "ONNX export")
    folded = fuse_bn(model)
    res = preprocessing.resolution
    inputs = check_inputs if check_inputs is not None else random_inputs(res)
    batches = [inputs]
    if dynamic_size:
        generator = torch.Generator().manual_seed(1)
        batches += [torch.randn(2, 3, h, w, generator=generator) for h, w in check_sizes(res)]
    with atomic_write(path) as tmp:
        save_onnx_graph(folded, tmp, res, dynamic_size=dynamic_size)
        proto = onnx.load(str(tmp))
        set_metadata(proto, metadata_props(preprocessing, labels, folded.config, "onnx", dynamic_size=dynamic_size))
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
    preprocessing) from the file, which an exported file always has. ``spin`` records
    whether its idle threads spin (:func:`ort_spin` when not given)."""

    def __init__(self, path: str | Path, threads: int = 2, *, spin: bool | None = None, metadata: bool = True) -> None:
        self.spin = ort_spin(threads) if spin is None else spin
        self.session = onnx_session(path, threads, spin=self.spin)
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = read_metadata(self.session, name=path) if metadata else {}

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits of a float32 NCHW array."""
        return self.session.run(None, {self.input_name: batch})[0]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(batch.float().numpy()))


MAX_ONNX_BYTES = 256 << 20  # a 1.0/224 float32 file is ~17 MB
CONTROL_FLOW = ("Loop", "If", "Scan")  # nothing a classifier of Table 1 needs; a Loop may never end


def check_graph(path: str | Path) -> None:
    """Refuse a graph with control flow (a node of :data:`CONTROL_FLOW`, or any node with a
    subgraph): an exported MobileNet V1 is a straight line of layers, and a ``Loop`` of
    2**62 steps in a file from outside would keep ``predict`` running for ever."""
    onnx = require("onnx", EXTRA, "reading ONNX files")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    if path.stat().st_size > MAX_ONNX_BYTES:
        size = path.stat().st_size
        raise ValueError(f"{path}: {size} bytes, more than the {MAX_ONNX_BYTES} a MobileNet V1 model can be")
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises protobuf's own errors for corrupt files
        reason = printable(type(exc).__name__)
        raise ValueError(f"cannot load ONNX model {path} (truncated or not an ONNX file?): {reason}") from None
    pending = list(graph.node)
    while pending:
        node = pending.pop()
        subgraphs = [a for a in node.attribute if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)]
        if node.op_type in CONTROL_FLOW or subgraphs:
            name = printable(node.name or node.op_type)
            raise ValueError(
                f"{path}: a {printable(node.op_type)} node ({name}): control flow is refused, "
                "an exported classifier has none"
            )


def load_onnx(path: str | Path, threads: int = 2) -> tuple[OnnxModel, LoadedWeights]:
    """``(model, info)`` like ``weights.load_weights``, from an exported file's metadata;
    the graph is checked first (:func:`check_graph`)."""
    check_graph(path)
    model = OnnxModel(path, threads)
    return model, loaded_weights(model.metadata, path)
