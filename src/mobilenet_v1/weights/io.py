"""Weight files: ``.safetensors`` with string metadata, written atomically.

The format every part of the project shares (training checkpoints, Google's converted
weights): the state dict, plus metadata ``alpha``, ``resolution``, ``num_classes``,
``classes`` (JSON list), ``preprocessing`` (JSON of ``Preprocessing.to_dict()``) and
``config`` (JSON of ``MobileNetV1Config.to_dict()``), from which the model is rebuilt.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import MobileNetV1Config
from ..data.transforms import Preprocessing
from ..files import atomic_write
from ..model import MobileNetV1
from ..untrusted import parse_json, printable
from .records import WeightsRecord

__all__ = ["LoadedWeights", "check_preprocessing", "load_safetensors", "metadata_strings", "save_safetensors"]


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
    import os
    import re

    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    meta = {"alpha": model.config.alpha, "num_classes": model.config.num_classes, "config": model.config.to_dict()}
    meta.update(metadata)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_write(path, make_parents=True) as tmp:
        try:
            save_file(state, str(tmp), metadata=metadata_strings(meta))
        except SafetensorError as exc:
            # safetensors reports a failed write ("I/O error: No space left on device (os error 28)")
            # as its own exception: an OSError here, which atomic_write names the file by.
            # Anything else (not an I/O error) is a bug and keeps its type.
            code = re.search(r"\(os error (\d+)\)", str(exc))
            if code is not None:
                raise OSError(int(code[1]), os.strerror(int(code[1]))) from exc
            if "I/O error" in str(exc):
                raise OSError(str(exc).strip().splitlines()[0]) from exc
            raise
    return path


def metadata_strings(meta: dict[str, Any]) -> dict[str, str]:
    """Metadata as safetensors stores it: strings as they are, anything else as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


MAX_HEADER_BYTES = 16 << 20  # a 1001-class checkpoint's header (tensor table + metadata) is ~40 KB
MAX_PREPROCESSING_SIZE = 8192  # resolution and resize bound: a 8192x8192 crop is already 800 MB of floats
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"I8", "I16", "I32", "I64", "U8"}


def load_safetensors(path: str | Path) -> tuple[MobileNetV1, LoadedWeights]:
    """Rebuild the model from a ``.safetensors`` file's ``config`` metadata and load it.

    The file is untrusted input, checked before anything large is allocated: the header's
    size, the metadata parsed with bounded size and depth (:func:`~mobilenet_v1.untrusted.parse_json`),
    the configuration validated and the model built on the meta device, every tensor's
    name, shape and dtype compared with it from the header alone; only then are the
    tensors read, and refused if any is NaN or infinite or a batch norm variance is
    negative. Class names and metadata strings are made printable. Every failure is a
    one-line ``ValueError`` naming the file (``FileNotFoundError`` for a missing one).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    _check_header_size(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            config = _config(path, meta)
            with torch.device("meta"):
                model = _build(path, config)
            expected = model.state_dict()
            _check_state(path, expected, {k: _header_entry(f, k) for k in f.keys()})
            state = {}
            for name, want in expected.items():
                state[name] = f.get_tensor(name).to(want.dtype)  # F64 beyond float32's range becomes inf
                _check_values(path, name, state[name])
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .safetensors file ({printable(exc)})") from None
    model.load_state_dict(state, assign=True)  # the file's tensors become the model's: nothing else allocated
    leftover = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if leftover:  # a tensor the state dict does not hold (none in MobileNetV1): build it for real
        model = MobileNetV1(config)
        model.load_state_dict(state)
    try:
        classes, preprocessing = _classes_and_preprocessing(path, meta, model.config.num_classes)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise ValueError(f"{path}: bad 'classes' or 'preprocessing' metadata ({reason})") from None
    shown = {printable(k): printable(v) for k, v in meta.items()}
    return model.eval(), LoadedWeights(classes, preprocessing, shown)


def _check_header_size(path: Path) -> None:
    """Refuse a header longer than :data:`MAX_HEADER_BYTES` before the library reads it."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) == 8:
        size = int.from_bytes(head, "little")
        if size > MAX_HEADER_BYTES:
            raise ValueError(
                f"{path}: not a readable .safetensors file (header of {size} bytes, more than {MAX_HEADER_BYTES})"
            )


def _config(path: Path, meta: dict[str, str]) -> MobileNetV1Config:
    if "config" not in meta:
        raise ValueError(f"{path}: no 'config' metadata (expected keys alpha, resolution, classes, config, ...)")
    data = parse_json(meta["config"], what=f"{path}: 'config' metadata", max_bytes=1 << 16, max_depth=2)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: bad 'config' metadata (expected a JSON object, got {type(data).__name__})")
    try:
        return MobileNetV1Config(**data)
    except (TypeError, ValueError, OverflowError) as exc:  # unknown keys or bad values
        raise ValueError(f"{path}: bad 'config' metadata ({printable(exc)})") from None


def _build(path: Path, config: MobileNetV1Config) -> MobileNetV1:
    """The model for ``config`` on the current device (the meta device: no memory)."""
    try:
        return MobileNetV1(config)
    except (ValueError, TypeError, OverflowError, RuntimeError, MemoryError) as exc:  # e.g. alpha 1e308
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: bad 'config' metadata (cannot build the model: {printable(reason)})") from None


def _header_entry(f: Any, name: str) -> tuple[tuple[int, ...], str]:
    """A tensor's shape and dtype from the file's header, reading none of its data."""
    piece = f.get_slice(name)
    return tuple(piece.get_shape()), piece.get_dtype()


def _check_values(path: Path, name: str, tensor: torch.Tensor) -> None:
    if tensor.is_floating_point():
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise ValueError(f"{path}: tensor {printable(name)!r} holds {bad} NaN or infinite values")
        if name.endswith("running_var") and bool((tensor < 0).any()):
            raise ValueError(f"{path}: tensor {name!r} holds a negative variance ({float(tensor.min()):.3g})")


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
    return [printable(c) for c in classes], check_preprocessing(preprocessing)


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


def _check_state(path: Path, expected: dict[str, torch.Tensor], got: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """Names, shapes and dtypes of the file's tensors (from its header) against the model's."""
    missing = [k for k in expected if k not in got]
    if missing:
        raise ValueError(f"{path}: missing tensor {missing[0]!r} ({len(missing)} missing)")
    unexpected = [k for k in got if k not in expected]
    if unexpected:
        raise ValueError(f"{path}: unexpected tensor {printable(unexpected[0])!r} ({len(unexpected)} unexpected)")
    for name, tensor in expected.items():
        shape, dtype = got[name]
        if shape != tuple(tensor.shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {shape}, the config needs {tuple(tensor.shape)}")
        allowed = _FLOAT_DTYPES if tensor.dtype.is_floating_point else _INT_DTYPES
        if dtype not in allowed:
            kind = "floating-point" if tensor.dtype.is_floating_point else "integer"
            raise ValueError(f"{path}: tensor {name!r} has dtype {printable(dtype)}, expected a {kind} dtype")
