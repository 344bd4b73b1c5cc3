"""Figures for ``predict`` and ``eval``: matplotlib (Agg backend), imported lazily."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..files import save_figure
from ..optional import pyplot

__all__ = ["plot_confusion", "plot_predictions"]


def plot_predictions(
    images: Sequence[torch.Tensor], names: Sequence[str], top: Sequence[list[tuple[str, float]]], path: str | Path
) -> Path:
    """One row per image: the picture beside a bar chart of its top-k probabilities."""
    plt = pyplot("plots")
    fig, axes = plt.subplots(len(images), 2, figsize=(10, 3.2 * len(images)), squeeze=False)
    for (ax_img, ax_bar), image, name, preds in zip(axes, images, names, top, strict=True):
        ax_img.imshow(image.permute(1, 2, 0).numpy())
        ax_img.set_title(name, fontsize=9)
        ax_img.axis("off")
        labels = [label.split(",")[0] for label, _ in preds][::-1]
        ax_bar.barh(labels, [p for _, p in preds][::-1], color="tab:blue")
        ax_bar.set_xlim(0, 1)
        ax_bar.set_xlabel("probability")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: str | Path) -> Path:
    """Row-normalised confusion matrix; the last column counts predictions outside the folders."""
    plt = pyplot("plots")
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes) + 1), [*classes, "other"], rotation=90, fontsize=8)
    ax.set_yticks(range(len(classes)), list(classes), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 30:
        for (i, j), count in np.ndenumerate(confusion):
            ax.text(
                j, i, str(count), ha="center", va="center", fontsize=7, color="white" if rows[i, j] > 0.5 else "black"
            )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)
