"""Top-1/top-5 evaluation on an image folder, for any ``batch -> logits`` callable.

The folder's sub-folders name classes either by ImageNet WordNet id (``n01440764``: the
shared Imagenette copy) or by the checkpoint's own class names. Google's models have 1001
outputs, output 0 being "background": WordNet id k of ``imagenet_wnids.txt`` is output
k+1, and ``ignore=(0,)`` makes the prediction 1000-way. The loop takes a plain callable so
the same code evaluates our model, Google's interpreter or an exported ONNX model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .transforms import IMAGE_EXTENSIONS, Preprocessing, eval_transform, float_input, load_image

__all__ = [
    "EvalResult",
    "ImageFolderDataset",
    "evaluate",
    "evaluate_samples",
    "find_samples",
    "make_loader",
    "top_classes",
]

Predictor = Callable[[torch.Tensor], torch.Tensor]


def find_samples(
    root: str | Path, class_names: Sequence[str], wnids: Sequence[str] | None = None
) -> tuple[list[tuple[Path, int]], dict[str, int]]:
    """(image path, output index) pairs and the sub-folder -> output index map.

    A sub-folder is one of ``class_names`` (a fine-tuned checkpoint's own classes, which
    may themselves be WordNet ids) or, for a model with ImageNet's outputs, a WordNet id
    from ``wnids`` (output ``index + len(class_names) - len(wnids)``, so 1 for 1001 outputs).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    offset = len(class_names) - len(wnids) if wnids else -1
    by_wnid = {w: i + offset for i, w in enumerate(wnids or ())} if offset >= 0 else {}
    by_name = {name: i for i, name in enumerate(class_names)}
    folders: dict[str, int] = {}
    samples: list[tuple[Path, int]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            continue
        target = by_name.get(folder.name, by_wnid.get(folder.name))
        if target is None:
            raise ValueError(f"folder {folder} is neither an ImageNet WordNet id nor a class of the checkpoint")
        folders[folder.name] = target
        samples += [(p, target) for p in images]
    if not samples:
        raise ValueError(f"no images in {root} (expected one sub-folder of {'/'.join(IMAGE_EXTENSIONS)} per class)")
    return samples, folders


class ImageFolderDataset(Dataset):
    """(image, target) pairs decoded with :func:`load_image` and ``transform``."""

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Callable[[torch.Tensor], torch.Tensor]):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[i]
        return self.transform(load_image(path)), target


def make_loader(dataset: Dataset, batch_size: int = 64, workers: int = 2) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


@dataclass
class EvalResult:
    """Top-1/top-5 in percent, per-folder accuracy, and each image's top-5 output indices.

    ``top1_ties_split`` counts an image whose best score is tied among k classes, the
    right one included, as 1/k: the expected top-1 over random tie-breaks, the one figure
    that does not depend on a tie rule (quantized outputs tie often)."""

    top1: float
    top5: float
    count: int
    per_class: dict[str, float]
    confusion: np.ndarray  # rows: folders; columns: folders, then "other"
    classes: list[str]
    predictions: np.ndarray = field(repr=False)  # (count, 5) output indices, best first
    targets: np.ndarray = field(repr=False)
    top1_ties_split: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "top1": self.top1,
            "top1_ties_split": self.top1_ties_split,
            "top5": self.top5,
            "count": self.count,
            "per_class": self.per_class,
        }


def top_classes(scores: torch.Tensor, k: int, *, seed: int = 0) -> torch.Tensor:
    """The ``k`` best classes per row; tied scores are ordered by a fixed pseudo-random
    class order (``seed``). Quantized outputs (LiteRT's uint8 scores) tie often: ``topk``
    leaves their order unspecified, and breaking them by the lower index would hand every
    tie to the same classes (Imagenette's tench is ImageNet class 0)."""
    order = torch.randperm(scores.shape[1], generator=torch.Generator().manual_seed(seed))
    ranked = scores[:, order].sort(dim=1, descending=True, stable=True).indices
    return order[ranked[:, : min(k, scores.shape[1])]]


@torch.inference_mode()
def evaluate(
    predict: Predictor,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    folders: dict[str, int],
    *,
    ignore: Sequence[int] = (),
    progress: bool = False,
    total: int | None = None,
) -> EvalResult:
    """Run ``predict`` over ``(images, targets)`` batches; ``ignore`` lists outputs never
    predicted (Google's background class). The progress bar (stderr) shows on a terminal."""
    from tqdm import tqdm

    preds, targets, credit = [], [], []
    try:
        for images, target in tqdm(
            batches, total=total, file=sys.stderr, disable=None if progress else True, unit="batch"
        ):
            logits = predict(images).float()
            if ignore:
                logits[:, list(ignore)] = float("-inf")
            preds.append(top_classes(logits, 5))
            targets.append(torch.as_tensor(target))
            credit.append(_tie_credit(logits, targets[-1]))
    except ValueError as exc:  # a DataLoader worker wraps the error with a traceback: keep its last line
        raise ValueError(str(exc).strip().splitlines()[-1].removeprefix("ValueError: ")) from None
    return _summarise(torch.cat(preds).numpy(), torch.cat(targets).numpy(), torch.cat(credit).numpy(), folders)


def evaluate_samples(
    predict: Predictor,
    samples: Sequence[tuple[Path, int]],
    folders: dict[str, int],
    preprocessing: Preprocessing,
    *,
    ignore: Sequence[int] = (),
    uint8: bool = False,
    batch_size: int = 64,
    workers: int = 0,
) -> EvalResult:
    """:func:`evaluate` on ``(path, target)`` samples, decoded and centre-cropped by the
    preset: ``predict`` gets the float input (or, with ``uint8``, the uint8 crops that
    Google's interpreter and the int8-exact model take)."""
    dataset = ImageFolderDataset(samples, eval_transform(preprocessing, to_float=False))
    batches = make_loader(dataset, batch_size=batch_size, workers=workers)
    run = predict if uint8 else (lambda batch: predict(float_input(batch, preprocessing)))
    return evaluate(run, batches, folders, ignore=ignore)


def _tie_credit(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row: 1/k if the target is among the k classes tied at the top, else 0."""
    top = scores == scores.max(dim=1, keepdim=True).values
    hit = top.gather(1, target.long().clamp(0, scores.shape[1] - 1)[:, None]).squeeze(1) & (target >= 0)
    return hit.float() / top.sum(dim=1)


def _summarise(preds: np.ndarray, targets: np.ndarray, credit: np.ndarray, folders: dict[str, int]) -> EvalResult:
    hit1 = preds[:, 0] == targets
    hit5 = (preds == targets[:, None]).any(axis=1)
    names = list(folders)
    column = {folders[n]: j for j, n in enumerate(names)}
    confusion = np.zeros((len(names), len(names) + 1), dtype=np.int64)
    per_class = {}
    for i, name in enumerate(names):
        rows = targets == folders[name]
        for p in preds[rows, 0]:
            confusion[i, column.get(int(p), len(names))] += 1
        per_class[name] = 100.0 * float(hit1[rows].mean()) if rows.any() else float("nan")
    return EvalResult(
        top1=100.0 * float(hit1.mean()),
        top5=100.0 * float(hit5.mean()),
        count=len(targets),
        per_class=per_class,
        confusion=confusion,
        classes=names,
        predictions=preds,
        targets=targets,
        top1_ties_split=100.0 * float(credit.mean()),
    )
