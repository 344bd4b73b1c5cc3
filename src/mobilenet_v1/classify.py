"""Classification with a trained model: preprocessing, outputs, class names, top-k.

:class:`Classifier` joins what a prediction needs: a ``batch -> outputs`` callable (our
model, the integer-exact emulation of Google's uint8 model, or an exported file under
its runtime), the preprocessing the weights expect, their class names, and the outputs
never to predict (Google's output 0, "background"). ``mobilenet-v1 predict`` and
``mobilenet-v1 eval`` both run through it.

May import: ``data``, ``weights``, ``untrusted``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from .data.images import to_image
from .data.transforms import Preprocessing, eval_transform
from .untrusted import printable
from .weights import MobileNetV1Weights, load_weights
from .weights.google_tflite.int8 import load_int8

__all__ = ["Classifier", "top_classes"]

Prediction = list[tuple[str, float]]  # (class name, probability), best first
ImageLike = str | Path | Image.Image | torch.Tensor | np.ndarray


def top_classes(scores: torch.Tensor, k: int, *, seed: int = 0) -> torch.Tensor:
    """The ``k`` best classes per row; tied scores are ordered by a fixed pseudo-random
    class order (``seed``). Quantized outputs (LiteRT's uint8 scores) tie often: ``topk``
    leaves their order unspecified, and breaking them by the lower index would hand every
    tie to the same classes (Imagenette's tench is ImageNet class 0)."""
    order = torch.randperm(scores.shape[1], generator=torch.Generator().manual_seed(seed))
    ranked = scores[:, order].sort(dim=1, descending=True, stable=True).indices
    return order[ranked[:, : min(k, scores.shape[1])]]


@dataclass
class Classifier:
    """A model with its preprocessing and class names, giving top-k class probabilities.

    ``uint8`` marks the integer-exact model: it takes uint8 crops and returns TFLite's
    uint8 softmax (probability ``q / 256``); any other model takes the float input of
    ``preprocessing`` and returns logits. Whatever the model returns is checked before it
    is ranked (a file's model may be anything): one row per image, one finite score per
    class; ``source`` names the model in those errors.
    """

    model: Callable[[torch.Tensor], torch.Tensor]
    preprocessing: Preprocessing
    classes: list[str]
    ignore: tuple[int, ...] = ()
    uint8: bool = False
    source: str = "the model"

    def __post_init__(self) -> None:
        if not self.classes or not all(isinstance(c, str) for c in self.classes):
            raise ValueError(f"classes must be a non-empty list of names, got {self.classes!r}")
        bad = [
            i for i in self.ignore if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.classes)
        ]
        if bad:
            raise ValueError(f"ignore must hold class indices in [0, {len(self.classes)}), got {bad[0]!r}")
        if len(set(self.ignore)) >= len(self.classes):
            raise ValueError("ignore leaves no class to predict")

    @classmethod
    def from_weights(cls, spec: str | Path | MobileNetV1Weights, *, int8_exact: bool = False) -> Classifier:
        """Google's weights or a checkpoint (anything ``load_weights`` takes); with
        ``int8_exact``, Google's quantized model under TFLite's integer arithmetic."""
        model, info = load_int8(spec) if int8_exact else load_weights(spec)
        return cls(model, info.preprocessing, info.classes, info.ignore, uint8=int8_exact, source=str(spec))

    @property
    def transform(self) -> v2.Compose:
        """Decoded image (uint8, 3 x H x W) -> the model's input."""
        return eval_transform(self.preprocessing, to_float=not self.uint8)

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities of a transformed batch (:meth:`probabilities_of` its scores)."""
        return self.probabilities_of(self.scores(batch))

    def probabilities_of(self, scores: torch.Tensor) -> torch.Tensor:
        """Class probabilities of checked scores (:meth:`scores`); ignored outputs get -1
        (a uint8 softmax can give 0, so they could otherwise still rank)."""
        probs = scores / 256.0 if self.uint8 else torch.softmax(scores.float(), dim=1)
        probs[:, list(self.ignore)] = -1.0
        return probs

    def top_indices(self, probs: torch.Tensor, k: int) -> torch.Tensor:
        """The ``k`` most probable classes of each row of ``probs`` (:func:`top_classes`),
        never an ignored one."""
        return top_classes(probs, min(k, probs.shape[1] - len(set(self.ignore))))

    @torch.inference_mode()
    def scores(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs for a transformed batch, once checked: one finite score
        per class for each image (else a one-line ``ValueError`` naming the model)."""
        out, count = self.model(batch), len(batch)
        expected = (count, len(self.classes))
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"{printable(self.source)} returned a {type(out).__name__}, not a tensor of scores")
        if tuple(out.shape) != expected:
            raise ValueError(
                f"{printable(self.source)} returned scores of shape {tuple(out.shape)} for {count} image(s); "
                f"expected {expected}: one score for each of its {len(self.classes)} classes"
            )
        if out.is_floating_point() and not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).any(dim=1).sum())
            raise ValueError(f"{printable(self.source)} returned NaN or infinite scores for {bad} of {count} image(s)")
        return out

    def top(self, batch: torch.Tensor, k: int = 5) -> list[Prediction]:
        """The ``k`` most probable classes of each image of a transformed batch."""
        probs = self.probabilities(batch)
        indices = self.top_indices(probs, k)
        return [
            [(self.classes[i], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist(), strict=True)]
            for row_p, row_i in zip(probs.gather(1, indices), indices, strict=True)
        ]

    def predict(self, images: ImageLike | Sequence[ImageLike], k: int = 5) -> list[Prediction]:
        """The ``k`` most probable classes of each image: a path, a PIL image, a uint8 or
        float (in [0, 1]) tensor (3, H, W) or a batch (N, 3, H, W) of them, a NumPy array
        (H, W, 3), or a list of any of these (:func:`~.data.images.to_image`). Every image is
        decoded and checked first, so a bad one fails before any work."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        items = _as_list(images)
        if not items:
            raise ValueError("images is empty: give at least one image")
        decoded = [to_image(image) for image in items]
        return self.top(torch.stack([self.transform(image) for image in decoded]), k)


def _as_list(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    """A batch tensor or array as its images, a list or tuple as a list, anything else as one image."""
    if isinstance(images, torch.Tensor | np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    return list(images) if isinstance(images, list | tuple) else [images]
