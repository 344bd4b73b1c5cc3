"""What ``mobilenet-v1 bench`` and ``benchmarks/deploy/latency.py`` measure, and the files
it takes: the subjects, named as everywhere else (the export formats of
:data:`~mobilenet_v1.deploy.formats.FORMATS` for exported files, ``torch`` for the model
in PyTorch), plus two references, and :func:`prepare`, which loads one configuration's
weights and exports its files.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..optional import require

__all__ = ["EXPORTED", "REFERENCES", "SUBJECTS", "TORCH", "BenchSetup", "export_timm", "prepare"]

TORCH = ("torch", "torch-compiled", "torch-compiled-bf16")  # the model itself, eager and compiled
# The export formats measured (deploy.formats.FORMATS): onnx and onnx-int8 always, the
# others (minutes of export each) unless left out.
EXPORTED = ("pt2", "pt2-bf16", "onnx", "onnx-int8", "executorch", "executorch-int8", "tflite-int8")
ALWAYS = ("onnx", "onnx-int8")
# Google's own int8 .tflite under LiteRT, and timm's MobileNet V1 of the same width as ONNX.
REFERENCES = ("google-tflite-int8", "timm-onnx")
SUBJECTS = (  # table order
    *TORCH,
    "pt2",
    "pt2-bf16",
    "onnx",
    "onnx-int8",
    "executorch",
    "executorch-int8",
    "google-tflite-int8",
    "tflite-int8",
    "timm-onnx",
)


@dataclass
class BenchSetup:
    """The files and model of one configuration (e.g. Google's 0.25/128)."""

    label: str
    model: Any  # MobileNetV1, folded
    resolution: int
    exported: dict[str, Path]  # format -> file
    google_tflite: list[Path]  # Google's own file(s), if these are Google's weights
    timm_onnx: Path | None = None
    torch_backend: str = "inductor"
    ort_spin: bool | None = None  # None: deploy.onnx.ort_spin(), chosen by the machine's load


def export_timm(alpha: float, resolution: int, path: Path) -> Path:
    """timm's MobileNet V1 (``mobilenetv1_100`` at width ``alpha``, random weights: speed
    does not depend on them) exported to float32 ONNX like ours."""
    import torch

    from ..deploy.onnx import save_onnx_graph

    efficientnet = require("timm.models.efficientnet", "dev", "the timm comparison")
    model = efficientnet._gen_mobilenet_v1("mobilenetv1_100", alpha, pretrained=False).eval()
    with torch.no_grad():
        save_onnx_graph(model, path, resolution)
    return path


def _export(fmt: str, model: Any, loaded: Any, stem: Path, calibration: Any) -> Path | None:
    """``model`` as ``stem_<fmt><suffix>``, int8 with Google's grids where ``loaded`` has
    them, else calibrated on ``calibration``; ``None`` (with a note on stderr) when the
    format's optional extra is not installed."""
    from ..deploy.formats import FORMATS, export_as
    from ..weights.grids import int8_grids

    path = stem.with_name(f"{stem.name}_{fmt}{FORMATS[fmt]}")
    try:
        export_as(
            fmt, model, path, loaded.preprocessing, labels=loaded.classes, calibration=calibration,
            grids=int8_grids(loaded) if fmt.endswith("int8") else None,
        )  # fmt: skip
    except ImportError as exc:
        print(f"{fmt} left out: {exc}", file=sys.stderr, flush=True)
        return None
    return path


def prepare(
    weights: str, workdir: Path, calibration: list[Path], *, timm: bool = True, exports: bool = True
) -> BenchSetup:
    """Load ``weights`` and export them into ``workdir``: ONNX float32 and int8 (and timm's
    float32), and with ``exports`` every other format of :data:`EXPORTED` (minutes)."""
    from ..deploy.quantize import load_batch
    from ..weights import load_weights
    from ..weights.grids import google_tflite

    model, loaded = load_weights(weights)
    pre = loaded.preprocessing
    label = f"{model.config.alpha:g}/{pre.resolution}"
    stem = workdir / label.replace("/", "_")
    images = load_batch(calibration, pre)
    formats = EXPORTED if exports else ALWAYS
    exported = {fmt: _export(fmt, model, loaded, stem, images) for fmt in formats}
    timm_path = export_timm(model.config.alpha, pre.resolution, workdir / f"timm_{stem.name}.onnx") if timm else None
    files = {fmt: path for fmt, path in exported.items() if path is not None}
    return BenchSetup(label, model, pre.resolution, files, google_tflite(loaded), timm_path)
