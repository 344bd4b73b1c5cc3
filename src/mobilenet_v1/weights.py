"""Google's released MobileNet V1 checkpoints (torchvision-style registry) and weight files.

:class:`MobileNetV1Weights` lists all 32 checkpoints of the TF-slim ``mobilenet_v1.md``
release (16 float, 16 quantized; width alpha in {1, 0.75, 0.5, 0.25} x resolution in
{224, 192, 160, 128}, Section 3.3-3.4, Table 6-7). Each record holds Google's download
URL, licence, architecture, preprocessing, Google's reported ImageNet top-1, our measured
Imagenette top-1 and the cost (1001 classes). A sha256 is recorded only where it was
computed here: the four quantized models whose ``google-coral/test_data`` copies are in
``../shared/data/pretrained`` (``verifiable``); the others download unverified.

:func:`load_weights` accepts a record, its enum name, Google's model name
(``mobilenet_v1_0.25_128_quant``) or a path to a ``.tflite``/``.safetensors`` file.
Converted weights are cached as ``.safetensors`` with string metadata (alpha,
resolution, num_classes, classes, preprocessing, config, source sha256).
"""

from __future__ import annotations

import difflib
import enum
import json
from dataclasses import dataclass
from pathlib import Path

from .download import Source, cache_dir, fetch, sha256sum
from .model import MobileNetV1
from .transforms import Preprocessing
from .weights_io import LoadedWeights, load_safetensors, save_safetensors

__all__ = [
    "DEFAULT_WEIGHTS",
    "WEIGHTS_LICENSE",
    "LoadedWeights",
    "MobileNetV1Weights",
    "WeightsRecord",
    "get_weights",
    "load_safetensors",
    "load_weights",
    "read_labels",
    "read_wnids",
    "save_safetensors",
]

WEIGHTS_LICENSE = "Apache-2.0"
_TF = "https://storage.googleapis.com/download.tensorflow.org/models"
_CORAL = "https://github.com/google-coral/test_data/raw/master"
LABELS = Source(
    f"{_CORAL}/imagenet_labels.txt",
    "imagenet_labels.txt",
    "b8aaeb5630c62626a7d124a05c0e14230a7ffdd2136a31d0190a4fb71c1d82f1",
)
WNIDS_FILE = "imagenet_wnids.txt"

# Google's ImageNet val top-1, float / quantized (TF-slim mobilenet_v1.md, 2018_08_02), and
# our cost with 1001 outputs: (alpha, resolution, float top-1, quant top-1, mult-adds).
_RELEASE: tuple[tuple[float, int, float, float, int], ...] = (
    (1.0, 224, 70.9, 70.1, 568_741_376),
    (1.0, 192, 70.0, 69.2, 418_122_752),
    (1.0, 160, 68.0, 67.2, 290_676_224),
    (1.0, 128, 65.2, 63.4, 186_401_792),
    (0.75, 224, 68.4, 66.8, 325_401_216),
    (0.75, 192, 67.2, 66.1, 239_274_240),
    (0.75, 160, 65.3, 62.3, 166_397_568),
    (0.75, 128, 62.1, 55.8, 106_771_200),
    (0.5, 224, 63.3, 60.7, 149_497_600),
    (0.5, 192, 61.7, 60.0, 109_970_944),
    (0.5, 160, 59.1, 57.7, 76_525_312),
    (0.5, 128, 56.3, 54.5, 49_160_704),
    (0.25, 224, 49.8, 48.0, 41_030_528),
    (0.25, 192, 47.7, 46.0, 30_212_864),
    (0.25, 160, 45.5, 43.4, 21_059_456),
    (0.25, 128, 41.5, 39.5, 13_570_304),
)
_PARAMS = {1.0: 4_210_112, 0.75: 2_568_912, 0.5: 1_320_160, 0.25: 463_856}  # weights only, 1001 classes
# sha256 of the google-coral/test_data copies (../shared/data/pretrained), computed here
# with `sha256sum`; 1.0/224 is published as an embedding extractor and its head layers.
_CORAL_SHA256 = {
    "mobilenet_v1_0.25_128_quant.tflite": "cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785",
    "mobilenet_v1_0.5_160_quant.tflite": "3cc6d2ca460abd2e0f699a6d0d2550c6b61c6e3b0e27a3616e384ea74cb86f43",
    "mobilenet_v1_0.75_192_quant.tflite": "41daeb22fdcf947e0e5ec32373aa9df7c31f3ef45dbd0ef7b5940fbce3c20f6a",
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite": (
        "f409ef4f73fcbb9667841965623c5c8524aac33d41b9bf5f3667161fb4a76319"
    ),
    "mobilenet_v1_1.0_224_quant_head_layers.tflite": "65a88984b258c6f3c99d7573acac8cf85bd747293d83d51fafc1c2fb6d632286",
}
_CORAL_URL_PATH = {"mobilenet_v1_1.0_224_quant_head_layers.tflite": "tools/mobilenet_quant_v1_224_head_layers.tflite"}
_SPLIT = {"mobilenet_v1_1.0_224_quant": ("_embedding_extractor", "_head_layers")}
# Our Imagenette val top-1, 1000-way, float import of the quantized file (docs/weights.md:
# `nice python benchmarks/fidelity.py`, 3,925 images).
_IMAGENETTE_TOP1: dict[str, float] = {
    "mobilenet_v1_1.0_224_quant": 72.33,
    "mobilenet_v1_0.75_192_quant": 66.65,
    "mobilenet_v1_0.5_160_quant": 57.50,
    "mobilenet_v1_0.25_128_quant": 41.25,
}


@dataclass(frozen=True)
class WeightsRecord:
    """One released checkpoint (a torchvision ``Weights`` entry)."""

    name: str  # Google's model name
    alpha: float
    resolution: int
    quantized: bool
    sources: tuple[Source, ...]  # one .tflite, or an embedding extractor and its head
    google_top1: float  # ImageNet val, as reported by Google
    mult_adds: int
    params: int
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
        return "+".join(s.sha256 or "unverified" for s in self.sources)

    def files(self, *, download: bool = True) -> list[Path]:
        """The local ``.tflite`` file(s), found or downloaded (see :mod:`.download`)."""
        return [fetch(s, download=download) for s in self.sources]


def _record(alpha: float, res: int, quantized: bool, top1: float, mult_adds: int) -> WeightsRecord:
    name = f"mobilenet_v1_{alpha}_{res}" + ("_quant" if quantized else "")
    files = [f"{name}{part}.tflite" for part in _SPLIT.get(name, ("",))]
    if all(f in _CORAL_SHA256 for f in files):
        sources = tuple(Source(f"{_CORAL}/{_CORAL_URL_PATH.get(f, f)}", f, _CORAL_SHA256[f]) for f in files)
    else:
        release = "mobilenet_v1_2018_08_02" if quantized else "mobilenet_v1_2018_02_22"
        sources = (Source(f"{_TF}/{release}/{name}.tgz", f"{name}.tflite", None, member=f"{name}.tflite"),)
    return WeightsRecord(
        name, alpha, res, quantized, sources, top1, mult_adds, _PARAMS[alpha], _IMAGENETTE_TOP1.get(name)
    )


def _enum_name(record: WeightsRecord) -> str:
    alpha = str(record.alpha).replace(".", "_")
    return f"ALPHA_{alpha}_{record.resolution}_{'QUANT' if record.quantized else 'FLOAT'}"


_RECORDS = [_record(a, r, q, qt if q else ft, ma) for a, r, ft, qt, ma in _RELEASE for q in (False, True)]
MobileNetV1Weights = enum.Enum("MobileNetV1Weights", {_enum_name(r): r for r in _RECORDS}, module=__name__)
MobileNetV1Weights.__doc__ = "All 32 of Google's released MobileNet V1 checkpoints (TF-slim 2018 release)."
DEFAULT_WEIGHTS = MobileNetV1Weights.ALPHA_0_25_128_QUANT  # the smallest verifiable one


def get_weights(name: str | MobileNetV1Weights) -> MobileNetV1Weights:
    """The enum member for an enum member, enum name or Google model name.

    An unknown name raises ``ValueError`` suggesting the closest known one.
    """
    if isinstance(name, MobileNetV1Weights):
        return name
    key = name.removeprefix("MobileNetV1Weights.")
    if key in MobileNetV1Weights.__members__:
        return MobileNetV1Weights[key]
    for member in MobileNetV1Weights:
        if member.value.name == key:
            return member
    known = [*MobileNetV1Weights.__members__, *(m.value.name for m in MobileNetV1Weights)]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = (
        f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(m.value.name for m in MobileNetV1Weights)}"
    )
    raise ValueError(f"unknown weights {name!r}{hint}")


def read_labels(*, download: bool = True) -> list[str]:
    """The 1001 class names of Google's models (``background`` first)."""
    return fetch(LABELS, download=download).read_text().splitlines()


def read_wnids() -> list[str] | None:
    """The 1000 ImageNet WordNet ids in class order, from the cache or data directory
    (Google publishes no copy to download); ``None`` when neither has one."""
    try:
        return fetch(Source("", WNIDS_FILE), download=False).read_text().split()
    except FileNotFoundError:
        return None


def _labels_or_numbers(num_classes: int) -> list[str]:
    try:
        labels = read_labels(download=False)
    except FileNotFoundError:
        labels = []
    return labels if len(labels) == num_classes else [str(i) for i in range(num_classes)]


def _load_tflite_path(path: Path) -> tuple[MobileNetV1, LoadedWeights]:
    from .convert import load_tflite

    paths = [path]
    head = path.with_name(path.name.replace("_embedding_extractor", "_head_layers"))
    if head != path and head.is_file():  # Google's 1.0/224 split: join the head beside it
        paths.append(head)
    model, info = load_tflite(paths)
    meta = {"source": " + ".join(map(str, paths)), "source_sha256": "+".join(sha256sum(p) for p in paths)}
    return model, LoadedWeights(_labels_or_numbers(info["num_classes"]), Preprocessing(info["resolution"]), meta)


def _load_record(record: WeightsRecord, download: bool) -> tuple[MobileNetV1, LoadedWeights]:
    cached = cache_dir() / f"{record.name}.safetensors"
    if cached.is_file():
        try:
            model, loaded = load_safetensors(cached)
        except ValueError:
            loaded = None  # a damaged cache entry is rebuilt from the source below
        if loaded and (not record.verifiable or loaded.metadata.get("source_sha256") == record.source_sha256):
            return model, LoadedWeights(loaded.classes, loaded.preprocessing, loaded.metadata, record)
    from .convert import load_tflite

    files = record.files(download=download)
    model, _ = load_tflite(files)
    classes = read_labels(download=download)
    meta = {
        "resolution": record.resolution,
        "classes": classes,
        "preprocessing": record.preprocessing.to_dict(),
        "weights": record.name,
        "source_sha256": "+".join(sha256sum(f) for f in files),
    }
    try:
        save_safetensors(model, cached, meta)
    except OSError:
        pass  # a read-only cache only costs a re-conversion next time
    strings = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    return model.eval(), LoadedWeights(classes, record.preprocessing, strings, record)


def load_weights(
    spec: str | Path | MobileNetV1Weights | WeightsRecord, *, download: bool = True
) -> tuple[MobileNetV1, LoadedWeights]:
    """Load Google's weights or a checkpoint into an eval-mode model.

    ``spec`` is a :class:`MobileNetV1Weights` member or record, its name, Google's model name
    (``mobilenet_v1_0.25_128_quant``) or a path to a ``.tflite`` or ``.safetensors`` file.
    Lookup: the explicit path, else the converted cache, else the ``.tflite`` file from
    the cache, the local data directory, or a sha256-checked download.
    """
    if isinstance(spec, str | Path) and not isinstance(spec, MobileNetV1Weights):
        path = Path(spec)
        if path.suffix in (".tflite", ".safetensors") or path.exists():
            if not path.is_file():
                raise FileNotFoundError(f"weights file not found: {path}")
            if path.suffix == ".tflite":
                return _load_tflite_path(path)
            if path.suffix == ".safetensors":
                return load_safetensors(path)
            raise ValueError(f"unsupported weights file {path}: expected a .tflite or .safetensors file")
    return _load_record(spec if isinstance(spec, WeightsRecord) else get_weights(spec).value, download)
