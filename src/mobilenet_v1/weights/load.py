"""Load Google's checkpoints, a ``.tflite``/``.safetensors`` file or a ``save_pretrained``
folder into our model: :func:`load_weights`, the one entry point.

A registry entry is loaded by :mod:`.google` (converted from its sha256-checked ``.tflite``
at every load, or from the cache where no sha256 is recorded); files and folders by the
reader of their format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.transforms import Preprocessing
from ..hub import WEIGHTS_NAME
from ..model import MobileNetV1
from .download import sha256sum
from .google import load_record
from .google_tflite.convert import load_tflite
from .google_tflite.reader import with_head
from .io import LoadedWeights, load_safetensors, pretrained_cfg
from .records import WeightsRecord, read_labels
from .registry import MobileNetV1Weights, get_weights

__all__ = ["load_weights"]


def _labels_or_numbers(num_classes: int) -> list[str]:
    try:
        labels = read_labels(download=False)
    except FileNotFoundError:
        labels = []
    return labels if len(labels) == num_classes else [str(i) for i in range(num_classes)]


def _load_tflite_path(path: Path) -> tuple[MobileNetV1, LoadedWeights]:
    paths = with_head(path)
    model, info = load_tflite(paths)
    meta = {"source": str(path), "source_sha256": "+".join(sha256sum(p) for p in paths)}
    classes = _labels_or_numbers(info["num_classes"])
    return model, LoadedWeights(classes, Preprocessing(info["resolution"]), meta, tflite_files=tuple(paths))


def load_weights(
    spec: str | Path | MobileNetV1Weights | WeightsRecord, *, download: bool = True, progress: bool = False
) -> tuple[MobileNetV1, LoadedWeights]:
    """Load Google's weights or a checkpoint into an eval-mode model.

    ``spec`` is a :class:`MobileNetV1Weights` member or record, its name, Google's model name
    (``mobilenet_v1_0.25_128_quant``), a path to a ``.tflite`` or ``.safetensors`` file, or
    a folder written by ``save_pretrained`` (its ``model.safetensors``). Lookup: the
    explicit path, else the converted cache, else the ``.tflite`` file from the cache, the
    local data directory, or a sha256-checked download (with a tqdm bar on stderr while it
    runs, when ``progress``). The model's ``pretrained_cfg`` says the weights' input size,
    preprocessing and class names (timm's convention).
    """
    model, info = _load(spec, download, progress)
    model.pretrained_cfg = pretrained_cfg(model.config, info)
    return model, info


def _load(spec: Any, download: bool, progress: bool) -> tuple[MobileNetV1, LoadedWeights]:
    if isinstance(spec, WeightsRecord):
        return load_record(spec, download=download, progress=progress)
    if isinstance(spec, str | Path) and not isinstance(spec, MobileNetV1Weights):
        path = Path(spec)
        if path.is_dir() and (path / WEIGHTS_NAME).is_file():
            return load_safetensors(path / WEIGHTS_NAME)
        if path.suffix in (".tflite", ".safetensors") or path.exists():
            if not path.is_file():
                raise FileNotFoundError(f"weights file not found: {path}")
            if path.suffix == ".tflite":
                return _load_tflite_path(path)
            if path.suffix == ".safetensors":
                return load_safetensors(path)
            raise ValueError(
                f"unsupported weights file {path}: expected a .tflite or .safetensors file, "
                f"or a folder with {WEIGHTS_NAME}"
            )
    return load_record(get_weights(spec).value, download=download, progress=progress)
