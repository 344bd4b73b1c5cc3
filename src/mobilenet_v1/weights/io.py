"""Weight files: ``.safetensors`` with string metadata, written atomically.

The format every part of the project shares (training checkpoints, Google's converted
weights): the state dict, plus metadata ``alpha``, ``resolution``, ``num_classes``,
``classes`` (JSON list), ``preprocessing`` (JSON of ``Preprocessing.to_dict()``) and
``config`` (JSON of ``MobileNetV1Config.to_dict()``), from which the model is rebuilt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.transforms import Preprocessing
from ..files import atomic_write
from ..model import MobileNetV1, MobileNetV1Config
from .records import WeightsRecord

__all__ = ["LoadedWeights", "load_safetensors", "metadata_strings", "save_safetensors"]


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


def save_safetensors(model: MobileNetV1, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write the state dict with string metadata (non-strings as JSON), atomically.

    ``alpha``, ``num_classes`` and ``config`` come from the model; the caller gives at
    least ``resolution``, ``classes`` (list) and ``preprocessing`` (``Preprocessing.to_dict()``).
    """
    from safetensors.torch import save_file

    path = Path(path)
    meta = {"alpha": model.config.alpha, "num_classes": model.config.num_classes, "config": model.config.to_dict()}
    meta.update(metadata)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_write(path, make_parents=True) as tmp:
        save_file(state, str(tmp), metadata=metadata_strings(meta))
    return path


def metadata_strings(meta: dict[str, Any]) -> dict[str, str]:
    """Metadata as safetensors stores it: strings as they are, anything else as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def load_safetensors(path: str | Path) -> tuple[MobileNetV1, LoadedWeights]:
    """Rebuild the model from a ``.safetensors`` file's ``config`` metadata and load it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .safetensors file ({exc})") from None
    if "config" not in meta:
        raise ValueError(f"{path}: no 'config' metadata (expected keys alpha, resolution, classes, config, ...)")
    try:
        model = MobileNetV1(MobileNetV1Config(**json.loads(meta["config"])))
    except (TypeError, ValueError) as exc:  # not JSON, unknown keys or bad values
        raise ValueError(f"{path}: bad 'config' metadata ({exc})") from None
    _check_state(path, model.state_dict(), state)
    model.load_state_dict(state)
    try:
        classes, preprocessing = _classes_and_preprocessing(meta, model.config.num_classes)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: bad 'classes' or 'preprocessing' metadata ({exc})") from None
    return model.eval(), LoadedWeights(classes, preprocessing, meta)


def _classes_and_preprocessing(meta: dict[str, str], num_classes: int) -> tuple[list[str], Preprocessing]:
    classes = json.loads(meta["classes"]) if "classes" in meta else [str(i) for i in range(num_classes)]
    if not isinstance(classes, list) or len(classes) != num_classes:
        raise ValueError(f"expected a list of {num_classes} class names")
    if "preprocessing" in meta:
        preprocessing = Preprocessing.from_dict(json.loads(meta["preprocessing"]))
    else:
        preprocessing = Preprocessing(int(meta.get("resolution", 224)))
    if not isinstance(preprocessing.resolution, int) or preprocessing.resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1, got {preprocessing.resolution!r}")
    return classes, preprocessing


def _check_state(path: Path, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    missing = [k for k in expected if k not in got]
    if missing:
        raise ValueError(f"{path}: missing tensor {missing[0]!r} ({len(missing)} missing)")
    unexpected = [k for k in got if k not in expected]
    if unexpected:
        raise ValueError(f"{path}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} unexpected)")
    for name, tensor in expected.items():
        if got[name].shape != tensor.shape:
            raise ValueError(
                f"{path}: tensor {name!r} has shape {tuple(got[name].shape)}, the config needs {tuple(tensor.shape)}"
            )
