"""Load Google's checkpoints or a ``.tflite``/``.safetensors`` file into our model.

Lookup for a registry entry (:mod:`.google`): the converted cache
(``<cache>/<name>.safetensors``), else Google's ``.tflite`` file(s) from the cache, the data
directory or a sha256-checked download, converted once (:mod:`.tflite.convert`) and cached
as ``.safetensors`` with string metadata (resolution, classes, preprocessing, config,
source sha256).
"""

from __future__ import annotations

from pathlib import Path

from ..data.transforms import Preprocessing
from ..model import MobileNetV1
from .download import sha256sum
from .google import load_record
from .io import LoadedWeights, load_safetensors
from .records import WeightsRecord, read_labels
from .registry import MobileNetV1Weights, get_weights
from .tflite.convert import load_tflite
from .tflite.reader import with_head

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
    (``mobilenet_v1_0.25_128_quant``) or a path to a ``.tflite`` or ``.safetensors`` file.
    Lookup: the explicit path, else the converted cache, else the ``.tflite`` file from
    the cache, the local data directory, or a sha256-checked download (with a tqdm bar on
    stderr while it runs, when ``progress``).
    """
    if isinstance(spec, WeightsRecord):
        return load_record(spec, download=download, progress=progress)
    if isinstance(spec, str | Path) and not isinstance(spec, MobileNetV1Weights):
        path = Path(spec)
        if path.suffix in (".tflite", ".safetensors") or path.exists():
            if not path.is_file():
                raise FileNotFoundError(f"weights file not found: {path}")
            if path.suffix == ".tflite":
                return _load_tflite_path(path)
            if path.suffix == ".safetensors":
                return load_safetensors(path)
            raise ValueError(f"unsupported weights file {path}: expected a .tflite or .safetensors file")
    return load_record(get_weights(spec).value, download=download, progress=progress)
