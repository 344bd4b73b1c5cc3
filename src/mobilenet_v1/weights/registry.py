"""Google's released MobileNet V1 checkpoints, as a torchvision weights enum.

:class:`MobileNetV1Weights` lists all 32 checkpoints of the TF-slim ``mobilenet_v1.md``
release (16 float, 16 quantized; width alpha in {1, 0.75, 0.5, 0.25} x resolution in
{224, 192, 160, 128}, Sections 3.3-3.4, Tables 6-7). It is a torchvision ``WeightsEnum``:
each member has ``url``, ``transforms`` and ``meta``, ``DEFAULT`` is an alias of the best
one (torchvision's convention), ``verify`` resolves names and ``get_state_dict(progress)``
gives the state dict of our model for those weights. Each member's value is a
:class:`~.records.WeightsRecord`: Google's download URL, licence, preprocessing, Google's
reported ImageNet top-1, our measured Imagenette top-1 and the cost (1001 classes). A
sha256 is recorded only where it was computed here: the four quantized models whose
``google-coral/test_data`` copies this project checked (``verifiable``); the others
download unverified.

All of them share one architecture, :func:`~.records.google_config`: TF-slim's MobileNet V1
with ReLU6, TensorFlow "SAME" padding, BN epsilon 1e-3 folded into the convolutions, and
1001 outputs (index 0 = "background").
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torchvision.models._api import WeightsEnum

from .download import Source
from .google import load_record
from .records import (
    LABELS,
    WEIGHTS_LICENSE,
    WNIDS_FILE,
    WeightsRecord,
    google_config,
    read_labels,
    read_wnids,
)

__all__ = [
    "FINETUNE_WEIGHTS",
    "LABELS",
    "WEIGHTS_LICENSE",
    "WNIDS_FILE",
    "MobileNetV1Weights",
    "WeightsRecord",
    "get_weights",
    "google_config",
    "read_labels",
    "read_wnids",
]

_TF = "https://storage.googleapis.com/download.tensorflow.org/models"
_CORAL = "https://github.com/google-coral/test_data/raw/master"
_PARAMS = {1.0: 4_210_112, 0.75: 2_568_912, 0.5: 1_320_160, 0.25: 463_856}  # weights only, 1001 classes


# sha256 of the google-coral/test_data copies, computed here with `sha256sum`; 1.0/224 is
# published there as an embedding extractor and its head layers.
def _coral(name: str) -> tuple[Source, ...]:
    files = {
        "mobilenet_v1_0.25_128_quant": (
            ("mobilenet_v1_0.25_128_quant.tflite", "cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785"),
        ),
        "mobilenet_v1_0.5_160_quant": (
            ("mobilenet_v1_0.5_160_quant.tflite", "3cc6d2ca460abd2e0f699a6d0d2550c6b61c6e3b0e27a3616e384ea74cb86f43"),
        ),
        "mobilenet_v1_0.75_192_quant": (
            ("mobilenet_v1_0.75_192_quant.tflite", "41daeb22fdcf947e0e5ec32373aa9df7c31f3ef45dbd0ef7b5940fbce3c20f6a"),
        ),
        "mobilenet_v1_1.0_224_quant": (
            (
                "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
                "f409ef4f73fcbb9667841965623c5c8524aac33d41b9bf5f3667161fb4a76319",
            ),
            (
                "tools/mobilenet_quant_v1_224_head_layers.tflite",
                "65a88984b258c6f3c99d7573acac8cf85bd747293d83d51fafc1c2fb6d632286",
            ),
        ),
    }[name]
    return tuple(
        Source(f"{_CORAL}/{path}", path.replace("tools/mobilenet_quant_v1_224", "mobilenet_v1_1.0_224_quant"), sha)
        for path, sha in files
    )


def _google(
    alpha: float,
    resolution: int,
    *,
    quantized: bool,
    top1: float,
    mult_adds: int,
    imagenette_top1: float | None = None,
    sources: tuple[Source, ...] | None = None,
) -> WeightsRecord:
    """A record of the TF-slim release: Google's archive unless ``sources`` says otherwise."""
    name = f"mobilenet_v1_{alpha}_{resolution}" + ("_quant" if quantized else "")
    if sources is None:
        release = "mobilenet_v1_2018_08_02" if quantized else "mobilenet_v1_2018_02_22"
        sources = (Source(f"{_TF}/{release}/{name}.tgz", f"{name}.tflite", None, member=f"{name}.tflite"),)
    return WeightsRecord(name, alpha, resolution, quantized, sources, top1, mult_adds, _PARAMS[alpha], imagenette_top1)


class MobileNetV1Weights(WeightsEnum):
    """All 32 of Google's released MobileNet V1 checkpoints (TF-slim 2018 release), as a
    torchvision ``WeightsEnum``; ``DEFAULT`` (an alias, not counted) is the best quantized one.

    ``top1``: Google's ImageNet val top-1 (TF-slim ``mobilenet_v1.md``); ``imagenette_top1``:
    ours, 1000-way, on Imagenette val (docs/weights.md); ``mult_adds``: with 1001 outputs.
    """

    ALPHA_1_0_224_FLOAT = _google(1.0, 224, quantized=False, top1=70.9, mult_adds=568_741_376)
    ALPHA_1_0_224_QUANT = _google(
        1.0,
        224,
        quantized=True,
        top1=70.1,
        mult_adds=568_741_376,
        imagenette_top1=72.33,
        sources=_coral("mobilenet_v1_1.0_224_quant"),
    )
    ALPHA_1_0_192_FLOAT = _google(1.0, 192, quantized=False, top1=70.0, mult_adds=418_122_752)
    ALPHA_1_0_192_QUANT = _google(1.0, 192, quantized=True, top1=69.2, mult_adds=418_122_752)
    ALPHA_1_0_160_FLOAT = _google(1.0, 160, quantized=False, top1=68.0, mult_adds=290_676_224)
    ALPHA_1_0_160_QUANT = _google(1.0, 160, quantized=True, top1=67.2, mult_adds=290_676_224)
    ALPHA_1_0_128_FLOAT = _google(1.0, 128, quantized=False, top1=65.2, mult_adds=186_401_792)
    ALPHA_1_0_128_QUANT = _google(1.0, 128, quantized=True, top1=63.4, mult_adds=186_401_792)
    ALPHA_0_75_224_FLOAT = _google(0.75, 224, quantized=False, top1=68.4, mult_adds=325_401_216)
    ALPHA_0_75_224_QUANT = _google(0.75, 224, quantized=True, top1=66.8, mult_adds=325_401_216)
    ALPHA_0_75_192_FLOAT = _google(0.75, 192, quantized=False, top1=67.2, mult_adds=239_274_240)
    ALPHA_0_75_192_QUANT = _google(
        0.75,
        192,
        quantized=True,
        top1=66.1,
        mult_adds=239_274_240,
        imagenette_top1=66.65,
        sources=_coral("mobilenet_v1_0.75_192_quant"),
    )
    ALPHA_0_75_160_FLOAT = _google(0.75, 160, quantized=False, top1=65.3, mult_adds=166_397_568)
    ALPHA_0_75_160_QUANT = _google(0.75, 160, quantized=True, top1=62.3, mult_adds=166_397_568)
    ALPHA_0_75_128_FLOAT = _google(0.75, 128, quantized=False, top1=62.1, mult_adds=106_771_200)
    ALPHA_0_75_128_QUANT = _google(0.75, 128, quantized=True, top1=55.8, mult_adds=106_771_200)
    ALPHA_0_5_224_FLOAT = _google(0.5, 224, quantized=False, top1=63.3, mult_adds=149_497_600)
    ALPHA_0_5_224_QUANT = _google(0.5, 224, quantized=True, top1=60.7, mult_adds=149_497_600)
    ALPHA_0_5_192_FLOAT = _google(0.5, 192, quantized=False, top1=61.7, mult_adds=109_970_944)
    ALPHA_0_5_192_QUANT = _google(0.5, 192, quantized=True, top1=60.0, mult_adds=109_970_944)
    ALPHA_0_5_160_FLOAT = _google(0.5, 160, quantized=False, top1=59.1, mult_adds=76_525_312)
    ALPHA_0_5_160_QUANT = _google(
        0.5,
        160,
        quantized=True,
        top1=57.7,
        mult_adds=76_525_312,
        imagenette_top1=57.5,
        sources=_coral("mobilenet_v1_0.5_160_quant"),
    )
    ALPHA_0_5_128_FLOAT = _google(0.5, 128, quantized=False, top1=56.3, mult_adds=49_160_704)
    ALPHA_0_5_128_QUANT = _google(0.5, 128, quantized=True, top1=54.5, mult_adds=49_160_704)
    ALPHA_0_25_224_FLOAT = _google(0.25, 224, quantized=False, top1=49.8, mult_adds=41_030_528)
    ALPHA_0_25_224_QUANT = _google(0.25, 224, quantized=True, top1=48.0, mult_adds=41_030_528)
    ALPHA_0_25_192_FLOAT = _google(0.25, 192, quantized=False, top1=47.7, mult_adds=30_212_864)
    ALPHA_0_25_192_QUANT = _google(0.25, 192, quantized=True, top1=46.0, mult_adds=30_212_864)
    ALPHA_0_25_160_FLOAT = _google(0.25, 160, quantized=False, top1=45.5, mult_adds=21_059_456)
    ALPHA_0_25_160_QUANT = _google(0.25, 160, quantized=True, top1=43.4, mult_adds=21_059_456)
    ALPHA_0_25_128_FLOAT = _google(0.25, 128, quantized=False, top1=41.5, mult_adds=13_570_304)
    ALPHA_0_25_128_QUANT = _google(
        0.25,
        128,
        quantized=True,
        top1=39.5,
        mult_adds=13_570_304,
        imagenette_top1=41.25,
        sources=_coral("mobilenet_v1_0.25_128_quant"),
    )
    DEFAULT = ALPHA_1_0_224_QUANT  # torchvision's alias for the recommended weights

    @classmethod
    def verify(cls, obj: Any) -> Any:
        """torchvision's weights check: ``None`` or a member as it is, a name (member name,
        ``"MobileNetV1Weights.NAME"``, ``"DEFAULT"`` or Google's model name) as its member;
        an unknown name is a ``ValueError`` naming the closest one, anything else a ``TypeError``."""
        if obj is None or isinstance(obj, cls):
            return obj
        if isinstance(obj, str):
            return get_weights(obj)
        raise TypeError(f"Invalid Weight class provided; expected {cls.__name__} but received {type(obj).__name__}.")

    def get_state_dict(self, progress: bool = True, check_hash: bool = True) -> dict[str, torch.Tensor]:
        """The state dict of ``MobileNetV1(self.value.config)`` for these weights, through
        :func:`~.google.load_record` (converted from the ``.tflite`` found locally or
        downloaded, with a tqdm bar on stderr while it downloads when ``progress``). Files
        are checked against their sha256 wherever one is recorded, so ``check_hash``
        (torchvision's builders pass ``True``) changes nothing."""
        model, _ = load_record(self.value, download=True, progress=progress)
        return model.state_dict()


# Where `mobilenet-v1 train` starts a fine-tune when given no weights: the smallest
# verifiable model (a small, fast model is what most fine-tunes on CPUs want). Prediction
# and evaluation default to MobileNetV1Weights.DEFAULT, the most accurate.
FINETUNE_WEIGHTS = MobileNetV1Weights.ALPHA_0_25_128_QUANT


def get_weights(name: str | MobileNetV1Weights) -> MobileNetV1Weights:
    """The enum member for an enum member, enum name (``DEFAULT`` included) or Google model name.

    An unknown name raises ``ValueError`` suggesting the closest known one.
    """
    if isinstance(name, MobileNetV1Weights):
        return name
    if not isinstance(name, str):
        raise ValueError(f"weights must be a MobileNetV1Weights member, a name or a path, got {name!r}")
    key = name.removeprefix("MobileNetV1Weights.")
    if key in MobileNetV1Weights.__members__:
        return MobileNetV1Weights[key]
    for member in MobileNetV1Weights:
        if member.value.name == key:
            return member
    known = [*MobileNetV1Weights.__members__, *(m.value.name for m in MobileNetV1Weights)]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    names = ", ".join(m.value.name for m in MobileNetV1Weights)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {names}"
    raise ValueError(f"unknown weights {name!r}{hint}")
