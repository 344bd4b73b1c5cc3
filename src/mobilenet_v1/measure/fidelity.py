"""How closely our import reproduces Google's interpreter.

Every evaluator turns a model's ``.tflite`` file(s) into a ``uint8 batch -> scores``
callable; all see the same uint8 centre crops, and each is scored on 1000-way top-1
(output 0, "background", is never predicted) and on agreement: the share of images
where its top-1 equals the reference's (LiteRT's); ``agreement_ties`` also counts an
image where LiteRT's uint8 scores tie at the top and ours picks one of the tied classes.
Add a level by adding an entry to :data:`EVALUATORS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.folders import ImageFolder
from ..data.transforms import Preprocessing, eval_transform, float_input
from ..deploy.litert import LiteRTModel
from ..weights.google_tflite.convert import load_tflite
from .evaluate import evaluate, make_loader

__all__ = ["EVALUATORS", "compare", "float_evaluator", "int8_evaluator", "litert_evaluator"]

Predictor = Callable[[torch.Tensor], torch.Tensor]
Evaluator = Callable[[Sequence[Path]], Predictor]


def litert_evaluator(paths: Sequence[Path]) -> Predictor:
    """Google's interpreter, default CPU kernels: the reference."""
    return LiteRTModel(paths).scores


def float_evaluator(paths: Sequence[Path]) -> Predictor:
    """Our model with dequantized weights and float activations ("float" level)."""
    model, info = load_tflite(paths)
    preset = Preprocessing(info["resolution"])
    return lambda batch: model(float_input(batch, preset))


def int8_evaluator(paths: Sequence[Path]) -> Predictor:
    """Our emulation of LiteRT's integer arithmetic ("int8-exact" level, its default kernels)."""
    from ..weights.google_tflite.int8 import Int8MobileNetV1

    model = Int8MobileNetV1.from_tflite(paths, kernels="xnnpack")
    return lambda batch: model(batch).float() / 256  # softmax bytes -> LiteRT's dequantized scores


EVALUATORS: dict[str, Evaluator] = {"litert": litert_evaluator, "float": float_evaluator, "int8-exact": int8_evaluator}


def compare(
    paths: Sequence[Path],
    samples: Sequence[tuple[Path, int]],
    folders: dict[str, int],
    *,
    evaluators: dict[str, Evaluator] | None = None,
    reference: str = "litert",
    batch_size: int = 50,
    workers: int = 0,
    progress: bool = False,
    scores: dict[str, torch.Tensor] | None = None,
) -> dict[str, dict[str, Any]]:
    """Top-1/top-5 of each evaluator and its top-1 agreement with ``reference``.

    ``scores``, if given, receives each evaluator's outputs, (images, 1001) in sample order.
    """
    evaluators = evaluators or EVALUATORS
    if reference not in evaluators:
        raise ValueError(f"reference {reference!r} is not among the evaluators {sorted(evaluators)}")
    resolution = load_tflite(paths)[1]["resolution"]
    dataset = ImageFolder(samples, eval_transform(Preprocessing(resolution), to_float=False))
    loader = make_loader(dataset, batch_size=batch_size, workers=workers)
    results, scores = {}, {} if scores is None else scores
    for name, make in evaluators.items():
        outputs: list[torch.Tensor] = []
        predict = _recording(make(paths), outputs)
        results[name] = evaluate(predict, loader, folders, ignore=(0,), progress=progress, total=len(loader))
        scores[name] = torch.cat(outputs)
    reference_scores = scores[reference][:, 1:]
    best = reference_scores.max(dim=1).values
    top1 = {name: r.predictions[:, 0] for name, r in results.items()}
    rows = torch.arange(len(reference_scores))
    return {
        name: {
            "top1": r.top1,
            "top5": r.top5,
            "count": r.count,
            "agreement": 100.0 * float(np.mean(top1[name] == top1[reference])),
            # LiteRT's uint8 output often ties at the top: its top-1 is then any of the tied classes
            "agreement_ties": 100.0
            * float((reference_scores[rows, torch.from_numpy(top1[name]) - 1] == best).float().mean()),
        }
        for name, r in results.items()
    }


def _recording(predict: Predictor, outputs: list[torch.Tensor]) -> Predictor:
    def run(batch: torch.Tensor) -> torch.Tensor:
        out = predict(batch)
        outputs.append(out.detach().float().clone())
        return out

    return run
