"""Training checkpoints: atomic writes, RNG state capture, and the run directory's files.

A checkpoint is a plain dict (torchvision-reference style) of the model, optimizer,
scheduler, EMA, scaler, RNG states and the position in training ``(epoch, step in
epoch, global step)``. It is written to a temporary file in the same folder, flushed,
fsync'ed and renamed over the old one, so a crash at any moment leaves either the old or
the new checkpoint, never a torn file. Loading uses ``torch.load(weights_only=True)``,
and :func:`check_checkpoint` checks the structure of a checkpoint to resume before any
of it is used (a malformed one is one ``ValueError`` naming the file).
"""

from __future__ import annotations

import os
import pickle
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_write
from .torchrun import restart_count

__all__ = [
    "BEST",
    "HISTORY_KEYS",
    "LAST",
    "Progress",
    "atomic_save",
    "capture_rng",
    "check_checkpoint",
    "find_checkpoint",
    "load_checkpoint",
    "restore_rng",
    "test_signal_from_env",
]

LAST = "checkpoint-last.pt"
BEST = "checkpoint-best.pt"
# The columns of a row of ``Progress.history`` (one per epoch; metrics.jsonl/csv).
HISTORY_KEYS = (
    "epoch",
    "step",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "train_seconds",
    "skipped_images",
)


@dataclass
class Progress:
    """Where training stands, and the running sums of the current epoch."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_acc: float = -1.0
    skipped_images: int = 0
    train_seconds: float = 0.0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: object) -> Progress:
        """A checkpoint's ``progress``; ``ValueError`` (why) if a field is missing or of the wrong type."""
        if not isinstance(data, dict):
            raise ValueError(f"'progress' is a {type(data).__name__}, not a dict")
        values = {}
        for f in fields(cls):
            if f.name not in data:
                raise ValueError(f"'progress' has no {f.name!r}")
            value = data[f.name]
            if f.name == "history":
                _check_history(value)
            elif isinstance(f.default, int) and not (
                isinstance(value, int) and not isinstance(value, bool) and value >= 0
            ):
                raise ValueError(f"'progress.{f.name}' must be an integer >= 0, got {value!r}")
            elif isinstance(f.default, float) and not _is_number(value):
                raise ValueError(f"'progress.{f.name}' must be a number, got {value!r}")
            values[f.name] = value
        return cls(**values)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through ``files.atomic_write`` (never a partial file)."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def find_checkpoint(run_dir: str | Path) -> Path:
    """The last checkpoint of a run; ``FileNotFoundError`` naming the folder if none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder to resume not found: {run_dir}")
    path = run_dir / LAST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume in {run_dir} (expected {LAST})")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file's dict, read without running code (``weights_only``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = "it holds objects other than tensors and plain values (refused: loading could run code)"
        raise ValueError(f"cannot read checkpoint {path}: {reason}") from None
    except (RuntimeError, EOFError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty or truncated file"
        raise ValueError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(state, dict):
        raise ValueError(f"cannot read checkpoint {path}: it holds a {type(state).__name__}, not a dict")
    return state


# What a checkpoint to resume must hold, and of which type (None: may also be None).
_CHECKPOINT_TYPES: dict[str, tuple[type, ...]] = {
    "model": (dict,),
    "optimizer": (dict,),
    "scheduler": (dict,),
    "ema": (dict, type(None)),
    "scaler": (dict,),
    "rng": (dict,),
    "progress": (dict,),
    "config": (dict,),
    "classes": (list,),
    "preprocessing": (dict,),
}


def check_checkpoint(state: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``state`` if it has the structure the trainer saves, else one ``ValueError`` naming
    ``path`` and the first bad entry: the keys and their types, tensors as the model and
    EMA, class names as strings, a well-formed ``progress`` and RNG state."""
    try:
        for key, types in _CHECKPOINT_TYPES.items():
            if key not in state:
                raise ValueError(f"no {key!r} entry")
            if not isinstance(state[key], types):
                raise ValueError(f"{key!r} is a {type(state[key]).__name__}, not a {types[0].__name__}")
        for key in ("model", "ema"):
            tensors = state[key] or {}
            bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
            if bad:
                raise ValueError(f"{key!r} entry {bad[0]!r} is not a tensor")
        classes = state["classes"]
        if len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise ValueError("'classes' must be a list of at least 2 class names")
        Progress.from_dict(state["progress"])
        _check_rng(state["rng"])
    except ValueError as exc:
        raise ValueError(f"malformed checkpoint {path}: {exc}") from None
    return state


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_history(history: object) -> None:
    if not isinstance(history, list):
        raise ValueError(f"'progress.history' is a {type(history).__name__}, not a list")
    for i, row in enumerate(history):
        if not isinstance(row, dict) or set(row) != set(HISTORY_KEYS) or not all(map(_is_number, row.values())):
            raise ValueError(f"'progress.history' row {i} is not a row of numbers {', '.join(HISTORY_KEYS)}")


def _check_rng(rng: dict[str, Any]) -> None:
    python, numpy, state = rng.get("python"), rng.get("numpy"), rng.get("torch")
    if not (isinstance(python, (list, tuple)) and len(python) == 3):
        raise ValueError("'rng.python' is not a Python random state")
    if not (isinstance(numpy, (list, tuple)) and len(numpy) == 5 and isinstance(numpy[1], torch.Tensor)):
        raise ValueError("'rng.numpy' is not a NumPy random state")
    if not (isinstance(state, torch.Tensor) and state.dtype == torch.uint8):
        raise ValueError("'rng.torch' is not a torch random state")


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states, as tensors/plain values for weights_only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    # torch.load may return lists where random.setstate wants tuples.
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


# Test hook: "SIGNAL@STEP" makes the run send itself SIGNAL right after global step STEP
# (e.g. "9@5": SIGKILL), to test kill-and-resume at a known point; "SIGNAL@STEP@RANK"
# only on that rank. Never after a torchrun restart, so an elastic run can finish.
TEST_SIGNAL_ENV = "MOBILENET_V1_TEST_SIGNAL"


def test_signal_from_env(rank: int) -> tuple[int, int] | None:
    """``(signal, step)`` from ``MOBILENET_V1_TEST_SIGNAL`` for this rank, or None."""
    value = os.environ.get(TEST_SIGNAL_ENV)
    if not value or restart_count() != 0:
        return None
    sig, step, *only = value.split("@")
    return (int(sig), int(step)) if not only or int(only[0]) == rank else None
