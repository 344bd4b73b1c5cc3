"""What a training run leaves in its folder, besides checkpoints.

``metrics.jsonl`` and ``metrics.csv`` (one row per epoch, rewritten from the history kept
in the checkpoint, so a resumed run never duplicates a row), TensorBoard events in
``tensorboard/`` (if installed) and ``curves.png`` (loss and accuracy against epochs).
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import Any

from ..data.transforms import Preprocessing
from ..files import save_figure, write_text
from ..optional import pyplot
from .config import TrainConfig

__all__ = ["TensorBoard", "format_row", "model_metadata", "plot_curves", "write_metrics"]


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Write the per-epoch rows as JSON lines and as CSV."""
    write_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text(run_dir / "metrics.csv", buffer.getvalue())


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
        plt = pyplot("curves.png")
    except ImportError as exc:
        warnings.warn(f"{exc}: no curves.png", stacklevel=2)
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
    save_figure(fig, path)
    return True


def format_row(row: dict[str, Any]) -> str:
    return (
        f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%  "
        f"val loss {row['val_loss']:.4f} top-1 {100 * row['val_acc']:.2f}%  lr {row['lr']:.3g}  "
        f"skipped images {row['skipped_images']}"
    )


def model_metadata(config: TrainConfig, classes: list[str], preprocessing: Preprocessing) -> dict[str, Any]:
    """What ``weights.save_safetensors`` stores beside the weights of a trained model."""
    return {
        "resolution": preprocessing.resolution,
        "classes": classes,
        "preprocessing": preprocessing.to_dict(),
        "trained_from": config.weights or "scratch",
        "recipe": config.recipe,
    }
