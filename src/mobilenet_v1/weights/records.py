"""One released checkpoint of Google's, as torchvision's ``Weights`` describes a checkpoint.

A :class:`WeightsRecord` is the value of a :class:`~.registry.MobileNetV1Weights` member. Besides
our own fields (alpha, resolution, sources, Google's top-1, cost, ...) it has torchvision's
three attributes (``torchvision.models._api.Weights``): ``url``, ``transforms`` (a
``functools.partial`` that builds the evaluation preset, as torchvision's ``Weights`` use)
and ``meta`` (torchvision's keys: ``categories``, ``num_params``, ``min_size``, ``_metrics``,
``_ops``, ``recipe``, ``_docs``; plus ``mult_adds``, ``license``, ``source``, ``alpha``,
``resolution``, ``quantized``).

All checkpoints share one architecture, :func:`google_config`: TF-slim's MobileNet V1 with
ReLU6, TensorFlow "SAME" padding, BN epsilon 1e-3 folded into the convolutions, and 1001
outputs (index 0 = "background").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.models._meta import _IMAGENET_CATEGORIES

from ..config import MobileNetV1Config
from ..data.transforms import Preprocessing, eval_transform
from ..model import MobileNetV1
from ..untrusted import printable
from .download import Source, fetch

__all__ = [
    "CATEGORIES",
    "LABELS",
    "RECIPE",
    "WEIGHTS_LICENSE",
    "WNIDS_FILE",
    "WeightsRecord",
    "google_config",
    "read_labels",
    "read_wnids",
]

WEIGHTS_LICENSE = "Apache-2.0"
RECIPE = "https://github.com/tensorflow/models/blob/master/research/slim/nets/mobilenet_v1.md"
_CORAL = "https://github.com/google-coral/test_data/raw/master"
LABELS = Source(
    f"{_CORAL}/imagenet_labels.txt",
    "imagenet_labels.txt",
    "b8aaeb5630c62626a7d124a05c0e14230a7ffdd2136a31d0190a4fb71c1d82f1",
)
WNIDS_FILE = "imagenet_wnids.txt"

# ``meta["categories"]``: torchvision's ImageNet-1K names, with TF-slim's extra output 0
# ("background") in front. They are in the same class order as Google's labels file
# (``imagenet_labels.txt``, line i + 1 = torchvision's class i); each is the first synonym of
# Google's label except two that torchvision disambiguated ("crane bird", "maillot tank
# suit"), so the names are unique and the same as every torchvision ImageNet model's, and
# need no file. Google's full labels are what ``read_labels()`` and ``load_weights`` give.
CATEGORIES: tuple[str, ...] = ("background", *_IMAGENET_CATEGORIES)


def google_config(alpha: float, num_classes: int = 1001) -> MobileNetV1Config:
    """The architecture of Google's released models (TF-slim): Table 1 with ReLU6,
    TensorFlow "SAME" padding and batch norm (epsilon 1e-3) folded into each conv."""
    return MobileNetV1Config(
        alpha=alpha, num_classes=num_classes, activation="relu6", padding="same", bn_eps=1e-3, folded_bn=True
    )


@functools.cache
def _num_params(config: MobileNetV1Config) -> int:
    """All parameters of the model built for ``config`` (torchvision's ``num_params``:
    weights and biases), counted on the meta device so that nothing is allocated."""
    with torch.device("meta"):
        model = MobileNetV1(config)
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class WeightsRecord:
    """One released checkpoint: the value of a ``MobileNetV1Weights`` member, with the
    ``url``, ``transforms`` and ``meta`` of a torchvision ``Weights`` entry."""

    name: str  # Google's model name
    alpha: float
    resolution: int
    quantized: bool
    sources: tuple[Source, ...]  # one .tflite, or an embedding extractor and its head
    google_top1: float  # ImageNet val, as reported by Google
    mult_adds: int
    params: int  # weights only (the paper's convention); meta["num_params"] counts biases too
    imagenette_top1: float | None = None  # measured here
    num_classes: int = 1001  # index 0 = background
    labels: Source = LABELS
    license: str = WEIGHTS_LICENSE

    @property
    def verifiable(self) -> bool:
        """True when every file has a sha256 computed here."""
        return all(s.sha256 is not None for s in self.sources)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.resolution)

    @property
    def source_sha256(self) -> str:
        """The sha256 of each file, joined by "+" ("unverified" where none was computed)."""
        return "+".join(s.sha256 or "unverified" for s in self.sources)

    @property
    def config(self) -> MobileNetV1Config:
        return google_config(self.alpha, self.num_classes)

    @property
    def url(self) -> str:
        """torchvision's ``Weights.url``: where the (first) file is downloaded from."""
        return self.sources[0].url

    @property
    def transforms(self) -> functools.partial:
        """torchvision's ``Weights.transforms``: ``transforms()`` builds the evaluation preset
        (:func:`~mobilenet_v1.data.transforms.eval_transform`), which takes a PIL image or a
        uint8 (3, H, W) tensor and returns the normalized float tensor. A ``partial`` of a
        module-level function, as torchvision's, so copies compare equal."""
        return functools.partial(eval_transform, self.preprocessing)

    @functools.cached_property
    def meta(self) -> dict[str, Any]:
        """torchvision's ``Weights.meta``, built on first use (``num_params`` builds the model)."""
        metrics: dict[str, dict[str, float]] = {"ImageNet-1K": {"acc@1": self.google_top1}}
        if self.imagenette_top1 is not None:
            # ours: float logits, which do not tie, so no tie-breaking rule enters (docs/weights.md)
            metrics["Imagenette-val-1000-way (ours, float, tie-rule-free)"] = {"acc@1": self.imagenette_top1}
        kind = "quantized (uint8) checkpoint, dequantized to float" if self.quantized else "float checkpoint"
        return {
            "categories": list(CATEGORIES) if self.num_classes == len(CATEGORIES) else None,
            "num_params": _num_params(self.config),
            "min_size": (32, 32),
            "mult_adds": self.mult_adds,
            "_ops": self.mult_adds / 1e9,
            "_metrics": metrics,
            "recipe": RECIPE,
            "license": self.license,
            "source": [{"url": s.url, "sha256": s.sha256} for s in self.sources],
            "alpha": self.alpha,
            "resolution": self.resolution,
            "quantized": self.quantized,
            "_docs": (
                f"Google's TF-slim MobileNet V1 {self.alpha}/{self.resolution} {kind} (Howard et al., 2017), "
                "imported from its .tflite into Table 1 with ReLU6, TensorFlow SAME padding and folded batch norm."
            ),
        }

    def files(self, *, download: bool = True, progress: bool = False) -> list[Path]:
        """The local ``.tflite`` file(s), found or downloaded (see :mod:`.download`)."""
        return [fetch(s, download=download, progress=progress) for s in self.sources]


def read_labels(*, download: bool = True, progress: bool = False) -> list[str]:
    """The 1001 class names of Google's models (``background`` first), made printable
    (:func:`~mobilenet_v1.untrusted.printable`) as any text read from a file."""
    text = fetch(LABELS, download=download, progress=progress).read_text(encoding="utf-8", errors="replace")
    return [printable(line) for line in text.splitlines()]


def read_wnids(path: Path | None = None) -> list[str] | None:
    """The 1000 ImageNet WordNet ids in class order, from the cache or data directory
    (Google publishes no copy to download); ``None`` when neither has one. ``path``: a
    file of the user's instead (one id per line, at most 1 MiB, ids made printable)."""
    if path is None:
        try:
            path = fetch(Source("", WNIDS_FILE), download=False)
        except FileNotFoundError:
            return None
        wnids = _read_ids(path)
        return wnids if len(wnids) == 1000 else None
    if not path.is_file():
        raise FileNotFoundError(f"WordNet id file not found: {printable(path)}")
    wnids = _read_ids(path)
    if not wnids:
        raise ValueError(f"no WordNet ids in {printable(path)}")
    return wnids


def _read_ids(path: Path, max_bytes: int = 1 << 20) -> list[str]:
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{printable(path)}: more than {max_bytes} bytes: not a list of WordNet ids")
    return [printable(w) for w in path.read_text(encoding="utf-8", errors="replace").split()]
