"""Training checkpoints: atomic writes, RNG state capture, and the run directory's files.

A checkpoint is a plain dict (torchvision-reference style) of the model, optimizer,
scheduler, EMA, scaler, RNG states and the position in training ``(epoch, step in
epoch, global step)``. It is written to a temporary file in the same folder, flushed,
fsync'ed and renamed over the old one, so a crash at any moment leaves either the old or
the new checkpoint, never a torn file. Loading uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_write

__all__ = [
    "BEST",
    "LAST",
    "Progress",
    "atomic_save",
    "capture_rng",
    "find_checkpoint",
    "load_checkpoint",
    "restore_rng",
    "test_signal_from_env",
]

LAST = "checkpoint-last.pt"
BEST = "checkpoint-best.pt"


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
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = "it holds objects other than tensors and plain values (refused: loading could run code)"
        raise ValueError(f"cannot read checkpoint {path}: {reason}") from None
    except (RuntimeError, EOFError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty or truncated file"
        raise ValueError(f"cannot read checkpoint {path}: {reason}") from None


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
    if not value or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return None
    sig, step, *only = value.split("@")
    return (int(sig), int(step)) if not only or int(only[0]) == rank else None
