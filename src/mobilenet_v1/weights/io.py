"""Weight files: ``.safetensors`` with string metadata, written atomically.

The format every part of the project shares (training checkpoints, Google's converted
weights): the state dict, plus metadata ``alpha``, ``resolution``, ``num_classes``,
``classes`` (JSON list), ``preprocessing`` (JSON of ``Preprocessing.to_dict()``) and
``config`` (JSON of ``MobileNetV1Config.to_dict()``), from which the model is rebuilt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import MobileNetV1Config
from ..data.transforms import Preprocessing
from ..hub import checked_config, load_state, metadata_strings, save_state
from ..model import MobileNetV1
from ..untrusted import parse_json, printable
from .records import WeightsRecord

__all__ = [
    "LoadedWeights",
    "check_preprocessing",
    "load_safetensors",
    "metadata_strings",
    "pretrained_cfg",
    "save_safetensors",
]


@dataclass(frozen=True)
class LoadedWeights:
    """What came with the weights: class names, preprocessing, string metadata, and for
    Google's checkpoints their registry record or the ``.tflite`` files they were read from."""

    classes: list[str]
    preprocessing: Preprocessing
    metadata: dict[str, str] = field(default_factory=dict)
    record: WeightsRecord | None = None
    tflite_files: tuple[Path, ...] = ()

    @property
    def ignore(self) -> tuple[int, ...]:
        """Outputs never predicted: Google's "background" class 0."""
        return (0,) if self.classes and self.classes[0] == "background" else ()


def pretrained_cfg(config: MobileNetV1Config, info: LoadedWeights) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of loaded weights: their input size, preprocessing and class
    names (``label_names``), and for Google's checkpoints the download URL and licence.
    ``crop_pct`` is the resolution over the preset's resize, so that timm's transforms
    (``resolve_data_config``, ``create_transform``) resize as the preset does."""
    pre: Preprocessing = info.preprocessing
    side = math.ceil(pre.resolution / 32)
    cfg = {
        "architecture": "mobilenet_v1",
        "input_size": (3, pre.resolution, pre.resolution),
        "pool_size": (side, side),
        "crop_pct": pre.resolution / pre.resize,  # timm's floor(size / crop_pct) is then our resize
        "interpolation": pre.interpolation,
        "mean": pre.mean,
        "std": pre.std,
        "num_classes": config.num_classes,
        "label_names": list(info.classes),
        "first_conv": "features.0.conv",
        "classifier": "classifier",
    }
    if info.record is not None:
        cfg |= {"tag": info.record.name, "url": info.record.sources[0].url, "license": info.record.license}
    return cfg


def save_safetensors(model: MobileNetV1, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write the state dict with string metadata (non-strings as JSON), atomically.

    ``alpha``, ``num_classes`` and ``config`` come from the model; the caller gives at
    least ``resolution``, ``classes`` (list) and ``preprocessing`` (``Preprocessing.to_dict()``).
    """
    meta = {"alpha": model.config.alpha, "num_classes": model.config.num_classes, "config": model.config.to_dict()}
    return save_state(model, path, {**meta, **metadata})


MAX_PREPROCESSING_SIZE = 8192  # resolution and resize bound: a 8192x8192 crop is already 800 MB of floats


def load_safetensors(path: str | Path) -> tuple[MobileNetV1, LoadedWeights]:
    """Rebuild the model from a ``.safetensors`` file's ``config`` metadata and load it
    (:func:`~mobilenet_v1.hub.load_state`: the file is untrusted input, checked before
    anything large is allocated), with its class names and preprocessing from the
    metadata, made printable. Every failure is a one-line ``ValueError`` naming the file
    (``FileNotFoundError`` for a missing one).
    """
    path = Path(path)
    model, meta = load_state(path, lambda meta: _build(path, _config(path, meta)))
    try:
        classes, preprocessing = _classes_and_preprocessing(path, meta, model.config.num_classes)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise ValueError(f"{path}: bad 'classes' or 'preprocessing' metadata ({reason})") from None
    shown = {printable(k): printable(v) for k, v in meta.items()}
    return model.eval(), LoadedWeights(classes, preprocessing, shown)


def _config(path: Path, meta: dict[str, str]) -> MobileNetV1Config:
    if "config" not in meta:
        raise ValueError(f"{path}: no 'config' metadata (expected keys alpha, resolution, classes, config, ...)")
    data = parse_json(meta["config"], what=f"{path}: 'config' metadata", max_bytes=1 << 16, max_depth=2)
    return checked_config(data, f"{path}: bad 'config' metadata")


def _build(path: Path, config: MobileNetV1Config) -> MobileNetV1:
    """The model for ``config`` on the current device (the meta device: no memory)."""
    try:
        return MobileNetV1(config)
    except (ValueError, TypeError, OverflowError, RuntimeError, MemoryError) as exc:  # e.g. alpha 1e308
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: bad 'config' metadata (cannot build the model: {printable(reason)})") from None


def _classes_and_preprocessing(path: Path, meta: dict[str, str], num_classes: int) -> tuple[list[str], Preprocessing]:
    if "classes" in meta:
        classes = parse_json(meta["classes"], what=f"{path}: 'classes' metadata", max_depth=1)
    else:
        classes = [str(i) for i in range(num_classes)]
    if not isinstance(classes, list) or len(classes) != num_classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"expected a list of {num_classes} class names")
    if "preprocessing" in meta:
        data = parse_json(meta["preprocessing"], what=f"{path}: 'preprocessing' metadata", max_depth=2)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        preprocessing = Preprocessing.from_dict(data)
    else:
        preprocessing = Preprocessing(int(meta.get("resolution", 224)))
    # class names stay as they are (a folder's name that is not UTF-8 must still match its
    # folder); every place that prints one makes it printable
    return list(classes), check_preprocessing(preprocessing)


def check_preprocessing(preprocessing: Preprocessing) -> Preprocessing:
    """``preprocessing`` when its values from a file are usable, else a ``ValueError``:
    an integer resolution and resize in [1, 8192] and three finite means and positive stds."""
    resolution = preprocessing.resolution
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 1 <= resolution <= MAX_PREPROCESSING_SIZE:
        raise ValueError(f"resolution must be an integer in [1, {MAX_PREPROCESSING_SIZE}], got {resolution!r}")
    fraction = preprocessing.crop_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not math.isfinite(fraction):
        raise ValueError(f"crop_fraction must be a finite number in (0, 1], got {fraction!r}")
    if preprocessing.resize > MAX_PREPROCESSING_SIZE:
        raise ValueError(f"resize {preprocessing.resize} exceeds {MAX_PREPROCESSING_SIZE}")
    for name in ("mean", "std"):
        values = getattr(preprocessing, name)
        numbers = [v for v in values if not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)]
        if len(values) != 3 or len(numbers) != 3 or (name == "std" and min(numbers) <= 0):
            raise ValueError(f"{name} must be 3 finite numbers{' > 0' if name == 'std' else ''}, got {values!r}")
    return preprocessing
