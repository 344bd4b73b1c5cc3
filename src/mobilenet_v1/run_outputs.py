"""What a training run leaves in its folder, besides checkpoints.

``metrics.jsonl`` and ``metrics.csv`` (one row per epoch, rewritten from the history kept
in the checkpoint, so a resumed run never duplicates a row), TensorBoard events in
``tensorboard/`` (if installed), ``curves.png`` (loss and accuracy against epochs) and the
models as ``.safetensors`` with the metadata that ``predict``, ``eval`` and ``export`` read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from .transforms import Preprocessing

__all__ = ["TensorBoard", "model_metadata", "plot_curves", "save_model_file", "write_metrics"]


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Write the per-epoch rows as JSON lines and as CSV."""
    _atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    _atomic_write_text(run_dir / "metrics.csv", buffer.getvalue())


class TensorBoard:
    """Scalars to ``run_dir/tensorboard``; does nothing (after one warning) without tensorboard."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn("tensorboard is not installed (pip install tensorboard): no TensorBoard logs", stacklevel=2)
            self.writer = None
        else:
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, scalars: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_curves(history: list[dict[str, Any]], path: Path) -> bool:
    """Loss and top-1 accuracy of train and val against epochs; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed (pip install 'mobilenet-v1[plot]'): no curves.png", stacklevel=2)
        return False
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val"):
        ax_loss.plot(epochs, [row[f"{split}_loss"] for row in history], marker="o", label=split)
        ax_acc.plot(epochs, [100 * row[f"{split}_acc"] for row in history], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def model_metadata(model: nn.Module, classes: list[str], preprocessing: Preprocessing) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` model file (the format of ``weights.py``)."""
    config = model.config
    return {
        "alpha": str(config.alpha),
        "resolution": str(preprocessing.resolution),
        "num_classes": str(config.num_classes),
        "classes": json.dumps(classes),
        "preprocessing": json.dumps(preprocessing.to_dict()),
        "config": json.dumps(config.to_dict()),
    }


def save_model_file(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """``model``'s weights as ``.safetensors`` with ``metadata``, written atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)
