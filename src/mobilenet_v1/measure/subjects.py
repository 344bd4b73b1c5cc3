"""What ``mobilenet-v1 bench`` and ``benchmarks/latency.py`` measure, and the files it
takes: the subjects (every deployment path, in table order), and :func:`prepare`, which
loads one configuration's weights and exports its ONNX, pt2, ExecuTorch and LiteRT files.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EXPORTS", "SUBJECTS", "BenchSetup", "export_subjects", "export_timm", "prepare"]

SUBJECTS = (
    "torch-eager",
    "torch-compiled",
    "torch-compiled-bf16",
    "pt2-fp32",
    "pt2-bf16",
    "ort-fp32",
    "ort-int8",
    "executorch-fp32",
    "executorch-int8",
    "litert-int8",
    "ours-tflite-int8",
    "timm-ort-fp32",
)
# The subjects run from an exported file, and its export format (deploy.exported.FORMATS)
EXPORTS = {
    "pt2-fp32": "pt2",
    "pt2-bf16": "pt2-bf16",
    "executorch-fp32": "executorch",
    "executorch-int8": "executorch-int8",
    "ours-tflite-int8": "tflite-int8",
}


@dataclass
class BenchSetup:
    """The files and model of one configuration (e.g. Google's 0.25/128)."""

    label: str
    model: Any  # MobileNetV1, folded
    resolution: int
    fp32: Path
    int8: Path
    tflite: list[Path]
    timm_fp32: Path | None = None
    exported: dict[str, Path] = field(default_factory=dict)  # subject -> file (EXPORTS)
    torch_backend: str = "inductor"
    ort_spin: bool = True  # False on a shared machine, like OMP_WAIT_POLICY=PASSIVE for PyTorch


def export_timm(alpha: float, resolution: int, path: Path) -> Path:
    """timm's MobileNet V1 (``mobilenetv1_100`` at width ``alpha``, random weights: speed
    does not depend on them) exported to float32 ONNX like ours."""
    import torch

    from ..deploy.onnx import save_onnx_graph

    try:
        from timm.models.efficientnet import _gen_mobilenet_v1
    except ImportError:
        raise ImportError("the timm comparison needs timm: pip install 'mobilenet-v1[dev]'") from None
    model = _gen_mobilenet_v1("mobilenetv1_100", alpha, pretrained=False).eval()
    with torch.no_grad():
        save_onnx_graph(model, path, resolution)
    return path


def export_subjects(model: Any, loaded: Any, stem: Path, calibration: Any) -> dict[str, Path]:
    """The :data:`EXPORTS` files of ``model`` (``stem`` + subject + suffix), int8 with
    Google's grids where ``loaded`` has them, else calibrated on ``calibration``; a
    subject whose optional extra is not installed is left out with a note on stderr."""
    from ..deploy.exported import FORMATS, export_as
    from ..deploy.quantize import int8_grids

    files = {}
    for subject, fmt in EXPORTS.items():
        path = stem.with_name(f"{stem.name}_{subject}{FORMATS[fmt]}")
        try:
            export_as(
                fmt, model, path, loaded.preprocessing, labels=loaded.classes, calibration=calibration,
                grids=int8_grids(loaded) if fmt == "tflite-int8" else (),
            )  # fmt: skip
        except ImportError as exc:
            print(f"{subject} left out: {exc}", file=sys.stderr, flush=True)
            continue
        files[subject] = path
    return files


def prepare(
    weights: str, workdir: Path, calibration: list[Path], *, timm: bool = True, exports: bool = True
) -> BenchSetup:
    """Load ``weights``, export fp32 and int8 ONNX (and timm's) into ``workdir``, and with
    ``exports`` the pt2, ExecuTorch and LiteRT files of :data:`EXPORTS` (minutes)."""
    from ..deploy.onnx import export_onnx
    from ..deploy.quantize import export_int8, int8_grids, load_batch
    from ..weights import load_weights

    model, loaded = load_weights(weights)
    pre = loaded.preprocessing
    grids = int8_grids(loaded)
    label = f"{model.config.alpha:g}/{pre.resolution}"
    stem = workdir / label.replace("/", "_")
    fp32, int8 = stem.with_name(f"{stem.name}_fp32.onnx"), stem.with_name(f"{stem.name}_int8.onnx")
    images = load_batch(calibration, pre)
    export_onnx(model, fp32, pre, labels=loaded.classes)
    export_int8(model, int8, pre, images, labels=loaded.classes, grids=grids)
    timm_path = export_timm(model.config.alpha, pre.resolution, workdir / f"timm_{fp32.name}") if timm else None
    exported = export_subjects(model, loaded, stem, images) if exports else {}
    return BenchSetup(label, model, pre.resolution, fp32, int8, grids, timm_path, exported=exported)
