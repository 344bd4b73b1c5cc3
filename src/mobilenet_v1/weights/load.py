"""Load Google's checkpoints or a ``.tflite``/``.safetensors`` file into our model.

Lookup for a registry entry: the converted cache (``<cache>/<name>.safetensors``), else
Google's ``.tflite`` file(s) from the cache, the data directory or a sha256-checked
download, converted once (:mod:`.tflite.convert`) and cached as ``.safetensors`` with
string metadata (resolution, classes, preprocessing, config, source sha256).
"""

from __future__ import annotations

from pathlib import Path

from ..data.transforms import Preprocessing
from ..model import MobileNetV1
from .download import cache_dir, sha256sum
from .io import LoadedWeights, load_safetensors, metadata_strings, save_safetensors
from .registry import MobileNetV1Weights, WeightsRecord, get_weights, read_labels
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


def _load_record(record: WeightsRecord, download: bool) -> tuple[MobileNetV1, LoadedWeights]:
    cached = cache_dir() / f"{record.name}.safetensors"
    if cached.is_file():
        try:
            model, loaded = load_safetensors(cached)
        except ValueError:
            loaded = None  # a damaged cache entry is rebuilt from the source below
        if loaded and (not record.verifiable or loaded.metadata.get("source_sha256") == record.source_sha256):
            return model, LoadedWeights(loaded.classes, loaded.preprocessing, loaded.metadata, record)
    files = record.files(download=download)
    model, _ = load_tflite(files)
    classes = read_labels(download=download)
    meta = {
        "resolution": record.resolution,
        "classes": classes,
        "preprocessing": record.preprocessing.to_dict(),
        "weights": record.name,
        "source_sha256": "+".join(sha256sum(f) for f in files),
    }
    try:
        save_safetensors(model, cached, meta)
    except OSError:
        pass  # a read-only cache only costs a re-conversion next time
    return model.eval(), LoadedWeights(classes, record.preprocessing, metadata_strings(meta), record, tuple(files))


def load_weights(
    spec: str | Path | MobileNetV1Weights | WeightsRecord, *, download: bool = True
) -> tuple[MobileNetV1, LoadedWeights]:
    """Load Google's weights or a checkpoint into an eval-mode model.

    ``spec`` is a :class:`MobileNetV1Weights` member or record, its name, Google's model name
    (``mobilenet_v1_0.25_128_quant``) or a path to a ``.tflite`` or ``.safetensors`` file.
    Lookup: the explicit path, else the converted cache, else the ``.tflite`` file from
    the cache, the local data directory, or a sha256-checked download.
    """
    if isinstance(spec, WeightsRecord):
        return _load_record(spec, download)
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
    return _load_record(get_weights(spec).value, download)
