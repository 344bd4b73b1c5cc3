"""Validation during training and the autocast policy (the device is checked in :mod:`.config`).

``measure/evaluate.py`` holds the standalone evaluation (any ``batch -> logits`` callable, top-5,
confusion matrix); this loop is the one training needs: the loss too, unreadable images
skipped and counted, and sums reduced over processes under torchrun.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data.transforms import Preprocessing, float_input
from . import distributed as dist

__all__ = ["autocast_for", "evaluate"]

Autocast = Callable[[], contextlib.AbstractContextManager]


def autocast_for(precision: str, device: torch.device) -> Autocast:
    """A factory of autocast contexts: none for fp32, bfloat16, or float16 for "amp" on CUDA.

    On CPU "amp" also means bfloat16: float16 kernels are slow there and need loss scaling.
    """
    if precision == "fp32":
        return contextlib.nullcontext
    half = torch.float16 if precision == "amp" and device.type == "cuda" else torch.bfloat16
    return lambda: torch.autocast(device.type, dtype=half)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    autocast: Autocast,
    memory_format: torch.memory_format,
    env: dist.DistEnv,
    preprocessing: Preprocessing,
) -> tuple[float, float, int]:
    """Mean cross-entropy, top-1 and the number of skipped images, over all processes."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    skipped_images = 0
    for images, labels, skipped in loader:
        skipped_images += skipped
        if not len(labels):
            continue
        images = float_input(images.to(device, non_blocking=True, memory_format=memory_format), preprocessing)
        labels = labels.to(device, non_blocking=True)
        with autocast():
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        totals += torch.tensor([loss.item(), (logits.argmax(1) == labels).sum().item(), len(labels)])
    loss_sum, correct, count = dist.all_reduce_sum(totals.to(device), env).tolist()
    return loss_sum / max(count, 1), correct / max(count, 1), skipped_images
