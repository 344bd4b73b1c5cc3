"""Top-1/top-5 evaluation on an image folder, for any ``batch -> logits`` callable.

The folder's sub-folders name classes either by ImageNet WordNet id (``n01440764``: the
shared Imagenette copy) or by the checkpoint's own class names. Google's models have 1001
outputs, output 0 being "background": WordNet id k of ``imagenet_wnids.txt`` is output
k+1, and ``ignore=(0,)`` makes the prediction 1000-way. The loop takes a plain callable so
the same code evaluates our model, Google's interpreter or an exported ONNX model.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..classify import Classifier, top_classes
from ..data.folders import ImageFolder, find_samples
from ..data.transforms import Preprocessing, eval_transform, float_input

__all__ = [
    "EvalResult",
    "ExportDrop",
    "compare_folder",
    "evaluate",
    "evaluate_folder",
    "evaluate_samples",
    "make_loader",
    "worker_error",
]

Predictor = Callable[[torch.Tensor], torch.Tensor]


def make_loader(dataset: Dataset, batch_size: int = 64, workers: int = 2) -> DataLoader:
    """Batches of ``dataset`` in order (evaluation needs no shuffling)."""
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
    error: BaseException | None = None
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
    except Exception as exc:
        error = worker_error(exc)
        if error is None:
            raise
        if not isinstance(error, ValueError | OSError):  # a bug: keep the worker's traceback as the cause
            error.__cause__ = exc
    if error is not None:  # raised here, once the loader (and its workers) has been released
        raise error
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
    dataset = ImageFolder(samples, eval_transform(preprocessing, to_float=False))
    batches = make_loader(dataset, batch_size=batch_size, workers=workers)
    run = predict if uint8 else (lambda batch: predict(float_input(batch, preprocessing)))
    return evaluate(run, batches, folders, ignore=ignore)


def evaluate_folder(
    classifier: Classifier,
    root: str | Path,
    *,
    wnids: Sequence[str] | None = None,
    batch_size: int = 64,
    workers: int = 2,
    progress: bool = False,
) -> EvalResult:
    """Evaluate ``classifier`` on ``root``, one sub-folder per class named by the
    classifier's classes or (for ImageNet's outputs) by WordNet ids from ``wnids``."""
    samples, folders = find_samples(root, classifier.classes, wnids)
    loader = make_loader(ImageFolder(samples, classifier.transform), batch_size, workers)
    return evaluate(classifier.scores, loader, folders, ignore=classifier.ignore, progress=progress, total=len(loader))


@dataclass
class ExportDrop:
    """What an export costs on a folder: the reference's and the export's results on the
    same images, the top-1 drop in points (tie-rule-free, ``top1_ties_split``) and the
    share of images whose top-1 class the two agree on."""

    reference: EvalResult
    exported: EvalResult

    @property
    def drop(self) -> float:
        return self.reference.top1_ties_split - self.exported.top1_ties_split

    @property
    def agreement(self) -> float:
        return float(np.mean(self.reference.predictions[:, 0] == self.exported.predictions[:, 0]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.reference.count,
            "reference_top1": self.reference.top1_ties_split,
            "top1": self.exported.top1_ties_split,
            "drop": self.drop,
            "top1_agreement": self.agreement,
        }


def compare_folder(
    reference: Classifier,
    exported: Classifier,
    root: str | Path,
    *,
    wnids: Sequence[str] | None = None,
    batch_size: int = 64,
    workers: int = 2,
    progress: bool = False,
) -> ExportDrop:
    """Evaluate a model and its export on the same folder: what the export (int8
    quantization above all) costs. Each runs its own preprocessing preset."""
    kwargs = {"wnids": wnids, "batch_size": batch_size, "workers": workers, "progress": progress}
    return ExportDrop(evaluate_folder(reference, root, **kwargs), evaluate_folder(exported, root, **kwargs))


_WORKER_HEADER = re.compile(r"^Caught (\S+) in DataLoader worker process \d+\.")


def worker_error(exc: BaseException) -> BaseException | None:
    """The error a DataLoader worker raised, without the traceback text the loader wraps
    it in; ``None`` when ``exc`` does not come from a worker.

    The loader re-raises a worker's exception as ``type(exc)("Caught <type> in DataLoader
    worker process N.\nOriginal Traceback ...\n<type>: <message>")`` (a ``RuntimeError``
    when the type cannot be built from one string). The result has the worker's type
    where the loader kept it (``ValueError``, ``OSError`` and its subclasses such as
    ``FileNotFoundError``, ...) and the last line's message, so that an unreadable file
    is still one line naming it."""
    lines = str(exc).strip().splitlines()
    header = _WORKER_HEADER.match(lines[0]) if lines else None
    if header is None or len(lines) < 2:
        return None
    name, message = header.group(1).rsplit(".", 1)[-1], lines[-1].strip()
    kind, _, rest = message.partition(": ")
    if kind.rsplit(".", 1)[-1] == name:  # "ValueError: ..." or "PIL.UnidentifiedImageError: ..."
        message = rest
    elif message.rsplit(".", 1)[-1] == name:  # an exception without a message
        message = ""
    try:
        return _os_error(type(exc), message) if isinstance(exc, OSError) else type(exc)(message)
    except Exception:  # a type that needs other arguments: keep the loader's own
        return None


_ERRNO = re.compile(r"^\[Errno (\d+)\] (.*?)(?:: ('.*'|\".*\"))?$")


def _os_error(kind: type[OSError], message: str) -> OSError:
    """``kind`` rebuilt from its text, ``[Errno 5] Input/output error: 'a.jpg'``, with its
    errno, reason and file name (so that ``str`` gives the same text)."""
    match = _ERRNO.match(message)
    if match is None:
        return kind(message)
    code, reason, quoted = match.groups()
    if quoted is None:
        return kind(int(code), reason)
    try:
        filename = ast.literal_eval(quoted)
    except (ValueError, SyntaxError):
        return kind(message)
    return kind(int(code), reason, filename)


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
