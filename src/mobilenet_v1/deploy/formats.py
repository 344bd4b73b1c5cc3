"""The export formats, by the one name each has everywhere (``export --format``, ``bench``,
``tradeoff --runtime``, the ``format`` in each file's metadata): :data:`FORMATS`; the one
way to write each (:func:`export_as`) and to run any exported file (:func:`load_exported`,
which picks the runtime by suffix).

``.onnx`` runs under ONNX Runtime, ``.tflite`` under LiteRT, ``.pte`` under ExecuTorch
and ``.pt2`` under AOTInductor; each returns a ``batch -> logits`` callable and the
labels and preprocessing the file carries, so ``mobilenet-v1 eval/predict --model``
need nothing else. Each exporter and runtime is imported only when asked for (the
optional extras: ``export``, ``tflite``/``litert``, ``mobile``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..data.transforms import Preprocessing
from ..model import MobileNetV1
from ..weights import LoadedWeights

if TYPE_CHECKING:  # the CLI reads FORMATS at start-up: no exporter is imported before it is used
    from ..weights.grids import Int8Grids
    from .common import ExportReport

__all__ = ["FORMATS", "INT8_FORMATS", "RUNTIMES", "SUFFIXES", "export_as", "load_exported"]

FORMATS = {  # format -> the suffix of its files
    "onnx": ".onnx",
    "onnx-int8": ".onnx",
    "tflite": ".tflite",
    "tflite-int8": ".tflite",
    "executorch": ".pte",
    "executorch-int8": ".pte",
    "pt2": ".pt2",
    "pt2-bf16": ".pt2",
}
INT8_FORMATS = tuple(name for name in FORMATS if name.endswith("-int8"))
RUNTIMES = {".onnx": "ONNX Runtime", ".tflite": "LiteRT", ".pte": "ExecuTorch", ".pt2": "AOTInductor"}  # by suffix
SUFFIXES = tuple(RUNTIMES)


def export_as(
    fmt: str,
    model: MobileNetV1,
    path: str | Path,
    preprocessing: Preprocessing,
    *,
    labels: Sequence[str] | None = None,
    calibration: torch.Tensor | None = None,
    grids: Int8Grids | None = None,
    float_layers: int | None = None,
    qat_steps: int = 0,
    dynamic_size: bool = False,
) -> ExportReport:
    """``model`` exported to ``path`` in format ``fmt`` (:data:`FORMATS`) by that format's
    one exporter; ``calibration`` (a preprocessed batch) and ``grids`` (Google's
    or a QAT checkpoint's, :func:`~mobilenet_v1.weights.grids.int8_grids`) serve the int8 formats,
    ``float_layers`` onnx-int8, ``qat_steps`` onnx-int8/tflite-int8, ``dynamic_size`` onnx."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown fmt={fmt!r}; choose from {', '.join(FORMATS)}")
    if model.num_classes == 0:  # every exported file is a classifier: its labels, its runtime's checks
        raise ValueError("the model has no classifier (num_classes=0): give it one (reset_classifier(n)) to export")
    if fmt == "onnx":
        from .onnx import export_onnx

        return export_onnx(model, path, preprocessing, labels=labels, dynamic_size=dynamic_size)
    if fmt == "onnx-int8":
        from .quantize import export_int8

        if calibration is None:
            raise ValueError("fmt='onnx-int8' needs calibration images")
        return export_int8(
            model,
            path,
            preprocessing,
            calibration,
            labels=labels,
            grids=grids,
            float_layers=float_layers,
            qat_steps=qat_steps,
        )
    if fmt.startswith("tflite"):
        from .litert import export_tflite

        int8 = fmt == "tflite-int8"
        return export_tflite(
            model, path, preprocessing, labels=labels, int8=int8, calibration=calibration,
            grids=grids if int8 else None, qat_steps=qat_steps,
        )  # fmt: skip
    if fmt.startswith("executorch"):
        from .executorch import export_executorch

        int8 = fmt == "executorch-int8"
        return export_executorch(
            model, path, preprocessing, labels=labels, int8=int8, calibration=calibration, grids=grids if int8 else None
        )
    from .pt2 import DTYPES, export_pt2

    dtype = DTYPES[fmt]
    return export_pt2(model, path, preprocessing, labels=labels, dtype=dtype)


def load_exported(
    path: str | Path, threads: int = 2, *, trust_native_code: bool = False
) -> tuple[Callable[[torch.Tensor], torch.Tensor], LoadedWeights]:
    """``(model, info)`` of an exported file, as ``weights.load_weights`` gives for a
    checkpoint; an unknown suffix is a ``ValueError`` naming the ones known. A ``.pt2`` is
    native code that loading runs: it loads only with ``trust_native_code=True``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .onnx import load_onnx

        return load_onnx(path, threads)
    if suffix == ".tflite":
        from .litert import load_litert

        return load_litert(path, threads)
    if suffix == ".pte":
        from .executorch import load_executorch

        return load_executorch(path, threads)
    if suffix == ".pt2":
        from .pt2 import load_pt2

        return load_pt2(path, threads, trust_native_code=trust_native_code)
    raise ValueError(f"cannot tell the runtime of {path}: the file name must end in {', '.join(SUFFIXES)}")
