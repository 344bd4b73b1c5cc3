"""The accuracy/cost trade-off of the width and resolution multipliers, measured here.

The paper's Figures 4-5 and Tables 6-7 plot ImageNet accuracy against mult-adds for
alpha in {1, 0.75, 0.5, 0.25} x rho in {224, 192, 160, 128}. :func:`measure_grid` adds
what a user choosing a model for a device needs: the latency of each configuration on
*this* machine under a chosen runtime, and (with a data folder) the accuracy of Google's
weights where they are available. Results are cached per configuration, so a re-run is
quick; :func:`best_under_budget` picks the most accurate configuration that fits.

The cache (``cache.json``) is a file a user can edit, so it is read as untrusted input:
at most ``MAX_CACHE_BYTES``, a regular file, bounded JSON. A cache that is not one (not
JSON, another version) is rebuilt; an entry with missing, extra or mistyped fields,
values out of range (a negative or non-finite latency, an accuracy outside 0-100), or
cost and reported accuracies that differ from the ones computed here, is measured again
(with one warning). Nothing in it can stop the run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import MIN_INPUT_SIZE
from ..cost import model_cost
from ..data.transforms import Preprocessing
from ..deploy.formats import FORMATS
from ..deploy.onnx import ort_spin_setting
from ..files import write_text
from ..model import MobileNetV1
from ..untrusted import parse_json
from ..weights import get_weights, google_config, load_weights, read_wnids
from .conditions import machine

if TYPE_CHECKING:
    from .bench import Timing

__all__ = ["GRID", "RUNTIMES", "Point", "best_under_budget", "measure_grid", "pareto_front"]

ALPHAS = (1.0, 0.75, 0.5, 0.25)
RESOLUTIONS = (224, 192, 160, 128)
GRID = tuple((a, r) for a in ALPHAS for r in RESOLUTIONS)
RUNTIMES = (*FORMATS, "torch-compiled")  # as bench names them: the export formats, and compiled PyTorch
CACHE_VERSION = 2  # 2: the machine in the key, each point's load and noise flags
MAX_CACHE_BYTES = 16 << 20  # ~40,000 entries of ~400 bytes: far more than any grid and settings give

Predictor = Callable[[torch.Tensor], torch.Tensor]


def is_int8(runtime: str) -> bool:
    return runtime.endswith("int8")


@dataclass(frozen=True)
class Point:
    """One configuration: its cost, latency here, and accuracies (percent)."""

    alpha: float
    resolution: int
    mult_adds: int
    params: int
    latency_ms: float  # batch-1 median
    latency_p90_ms: float
    google_top1_float: float  # Google's reported ImageNet top-1 (registry)
    google_top1_quant: float
    imagenette_top1: float | None = None  # measured here with Google's weights, if given data
    load_before: float | None = None  # the 1-minute load average when its latency was measured
    flags: tuple[str, ...] = ()  # why its latency is unreliable (conditions.noise); () when it is not

    @property
    def label(self) -> str:
        return f"{self.alpha:g}/{self.resolution}"

    def google_top1(self, runtime: str) -> float:
        """The reported accuracy that matches the runtime: quantized for int8, else float."""
        return self.google_top1_quant if is_int8(runtime) else self.google_top1_float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flags": list(self.flags)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Point:
        return cls(**{**data, "flags": tuple(data.get("flags", ()))})


def pareto_front(points: list[Point], accuracy: Callable[[Point], float]) -> list[Point]:
    """The points no other point beats on both latency and accuracy, fastest first."""
    front: list[Point] = []
    for p in sorted(points, key=lambda p: (p.latency_ms, -accuracy(p))):
        if not front or accuracy(p) > accuracy(front[-1]):
            front.append(p)
    return front


def best_under_budget(
    points: list[Point],
    accuracy: Callable[[Point], float],
    *,
    budget_ms: float | None = None,
    budget_mult_adds: float | None = None,
) -> tuple[Point, list[Point]]:
    """The most accurate point within the latency and/or mult-adds budget, chosen among the
    points whose latency is reliable, and the flagged points left out (the caller says so).
    When every point that fits is flagged, the choice is refused: a ``ValueError`` naming
    them, since a noisy median may be far from the runtime's speed."""
    fits = [
        p
        for p in points
        if (budget_ms is None or p.latency_ms <= budget_ms)
        and (budget_mult_adds is None or p.mult_adds <= budget_mult_adds)
    ]
    if not fits:
        cheapest = min(points, key=lambda p: (p.latency_ms, p.mult_adds))
        raise ValueError(
            f"no configuration fits the budget; the cheapest is {cheapest.label} at "
            f"{cheapest.latency_ms:.2f} ms and {cheapest.mult_adds / 1e6:.1f} M mult-adds"
        )
    flagged = [p for p in points if p.flags and (budget_ms is None or p.latency_ms <= 2 * budget_ms)]
    reliable = [p for p in fits if not p.flags]
    if not reliable:
        noisy = ", ".join(f"{p.label} ({'; '.join(p.flags)})" for p in fits)
        raise ValueError(
            f"every configuration within the budget was measured under noise: {noisy}; "
            "measure again with force=True on a quieter machine"
        )
    return max(reliable, key=lambda p: (accuracy(p), -p.latency_ms)), flagged


def _local_weights(alpha: float, resolution: int, runtime: str, download: bool) -> tuple[MobileNetV1, Any] | None:
    """Google's weights for this configuration, if they can be had (locally or by download)."""
    name = f"mobilenet_v1_{alpha}_{resolution}" + ("_quant" if is_int8(runtime) else "")
    for candidate in (name, f"mobilenet_v1_{alpha}_{resolution}_quant"):
        try:
            return load_weights(get_weights(candidate), download=download)
        except (FileNotFoundError, OSError):
            continue
    return None


def _predictor(
    model: MobileNetV1, preset: Preprocessing, runtime: str, threads: int, workdir: Path, calibration: torch.Tensor
) -> Predictor:
    """``float batch -> logits`` under the runtime (export and quantize as needed)."""
    torch.set_num_threads(threads)
    if runtime == "torch-compiled":
        from ..deploy.compiled import compile_for_inference

        return compile_for_inference(model, preset.resolution)
    from ..deploy.formats import export_as, load_exported

    path = workdir / f"{runtime}{FORMATS[runtime]}"
    export_as(runtime, model, path, preset, calibration=calibration)
    return load_exported(path, threads, trust_native_code=True)[0]  # exported just now, here


def _latency(predict: Predictor, resolution: int, runs: int) -> Timing:
    from .bench import measure

    x = torch.randn(1, 3, resolution, resolution)
    with torch.inference_mode():
        return measure({"model": lambda: predict(x)}, runs=runs, warmup=10, rounds=1)["model"]


def _cache_key(alpha: float, resolution: int, settings: dict[str, Any]) -> str:
    raw = json.dumps({"alpha": alpha, "resolution": resolution, **settings}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _load_cache(path: Path) -> dict[str, Any]:
    """The cache in ``path``, ``{"version": ..., "points": {key: entry}}``, keeping only
    well-formed entries (:func:`_entry_problem`); empty when there is none or it is not a
    cache. A path that is not a regular file, or a file too large to be a cache, is
    refused (``ValueError``): it would be overwritten, and reading a FIFO would block."""
    try:  # non-blocking: opening a FIFO for reading would wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return {}
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"tradeoff cache {path} is not a regular file")
        if info.st_size > MAX_CACHE_BYTES:
            raise ValueError(
                f"tradeoff cache {path} is {info.st_size} bytes, more than a cache can be ({MAX_CACHE_BYTES}): "
                "move it away or write the results elsewhere"
            )
        raw = f.read(MAX_CACHE_BYTES + 1)
    try:
        cache = parse_json(raw, what=f"tradeoff cache {path}", max_bytes=MAX_CACHE_BYTES, max_depth=4)
    except ValueError as exc:
        warnings.warn(f"{exc}: rebuilding it", RuntimeWarning, stacklevel=3)
        return {}
    if not isinstance(cache, dict) or cache.get("version") != CACHE_VERSION:
        return {}  # an older cache format (or not a cache): rebuilt
    entries = cache.get("points", {})
    if not isinstance(entries, dict):
        warnings.warn(f"tradeoff cache {path}: 'points' is not an object: rebuilding it", RuntimeWarning, stacklevel=3)
        entries = {}
    kept = {key: entry for key, entry in entries.items() if _entry_problem(entry) is None}
    if len(kept) < len(entries):
        first = next(key for key in entries if key not in kept)
        warnings.warn(
            f"tradeoff cache {path}: {len(entries) - len(kept)} malformed entries are measured again "
            f"(e.g. {first[:32]!r}: {_entry_problem(entries[first])})",
            RuntimeWarning,
            stacklevel=3,
        )
    return {"version": CACHE_VERSION, "points": kept}


_POINT_FIELDS = {f.name: f.type for f in fields(Point)}


def _entry_problem(entry: Any) -> str | None:
    """Why a cache entry cannot be a :class:`Point`, or ``None`` if it can: exactly the
    point's fields, each of its type and in its range."""
    if not isinstance(entry, dict):
        return f"not an object but {type(entry).__name__}"
    if set(entry) != set(_POINT_FIELDS):
        missing, extra = set(_POINT_FIELDS) - set(entry), set(entry) - set(_POINT_FIELDS)
        return f"missing {sorted(missing)}, unexpected {sorted(map(str, extra))[:5]}"
    flags = entry["flags"]
    if not isinstance(flags, list) or not all(isinstance(f, str) and len(f) < 200 for f in flags) or len(flags) > 8:
        return f"flags = {str(flags)[:40]!r} is not a short list of strings"
    for name, value in entry.items():
        if name == "flags" or (name in ("imagenette_top1", "load_before") and value is None):
            continue
        whole = name in ("resolution", "mult_adds", "params")
        number = isinstance(value, int) if whole else isinstance(value, int | float) and math.isfinite(value)
        low, high = (MIN_INPUT_SIZE if name == "resolution" else 0), (100 if "top1" in name else math.inf)
        if isinstance(value, bool) or not number or not low <= value <= high:
            return f"{name} = {str(value)[:40]!r} is out of range or of the wrong type"
    return None


def _matches(point: Point, alpha: float, resolution: int) -> bool:
    """Whether a cached point is this configuration's: its alpha and resolution, its
    exact cost and Google's reported accuracies (all computed here, none measured)."""
    if (point.alpha, point.resolution) != (alpha, resolution):
        return False
    cost = model_cost(google_config(alpha), resolution)
    quant, float_ = (get_weights(f"mobilenet_v1_{alpha}_{resolution}{s}").value for s in ("_quant", ""))
    return (point.mult_adds, point.params, point.google_top1_float, point.google_top1_quant) == (
        cost.mult_adds,
        cost.params,
        float_.google_top1,
        quant.google_top1,
    )


def measure_grid(
    *,
    runtime: str = "onnx-int8",
    threads: int = 2,
    data: Path | None = None,
    calibration: Path | None = None,
    limit_per_class: int | None = None,
    runs: int = 100,
    cache_file: Path | None = None,
    download: bool = False,
    progress: bool = True,
    grid: tuple[tuple[float, int], ...] = GRID,
    force: bool = False,
) -> list[Point]:
    """Measure the configurations of ``grid`` (default: the paper's 16); each finished one
    is cached in ``cache_file`` at once, so an interrupted or repeated run is quick. The
    cache is keyed by everything the numbers depend on (the machine's CPU and cores, the
    threads, the runtime, its version and whether ONNX Runtime spins, the runs, the data),
    so it is never read on another machine or setting; ``force`` measures every
    configuration again."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    from tqdm import tqdm

    settings = cache_settings(runtime, threads, runs, data, limit_per_class)
    cache = _load_cache(cache_file) if cache_file else {}
    entries = cache.setdefault("points", {})
    cache["version"] = CACHE_VERSION
    stale = []
    points = []
    bar = tqdm(grid, desc=f"trade-off ({runtime}, {threads} threads)", unit="config", disable=not progress)
    for alpha, resolution in bar:
        bar.set_postfix_str(f"{alpha:g}/{resolution}")
        key = _cache_key(alpha, resolution, settings)
        if force:
            entries.pop(key, None)
        if key in entries and not _matches(Point.from_dict(entries[key]), alpha, resolution):
            stale.append(f"{alpha:g}/{resolution}")
            del entries[key]
        if key not in entries:
            entries[key] = _measure_one(
                alpha, resolution, runtime, threads, data, calibration, limit_per_class, runs, download
            ).to_dict()
            if cache_file:
                write_text(cache_file, json.dumps(cache, indent=2), make_parents=True)
        points.append(Point.from_dict(entries[key]))
    if stale:
        warnings.warn(
            f"tradeoff cache {cache_file}: the entries of {', '.join(stale)} did not match their configuration's "
            "cost or reported accuracy and were measured again",
            RuntimeWarning,
            stacklevel=2,
        )
    return points


def cache_settings(runtime: str, threads: int, runs: int, data: Path | None, limit: int | None) -> dict[str, Any]:
    """What a cached point depends on besides its configuration: the runtime and its
    settings, this machine (CPU, cores, the runtimes' versions), the data evaluated on."""
    return {
        "runtime": runtime,
        "threads": threads,
        "runs": runs,
        "data": str(data.resolve()) if data else None,
        "limit": limit,
        "machine": machine(threads),
        "ort_spin": ort_spin_setting() if runtime.startswith("onnx") else None,
    }


def _measure_one(
    alpha: float,
    resolution: int,
    runtime: str,
    threads: int,
    data: Path | None,
    calibration: Path | None,
    limit: int | None,
    runs: int,
    download: bool,
) -> Point:
    loaded = _local_weights(alpha, resolution, runtime, download) if data else None
    model, info = loaded if loaded else (MobileNetV1(google_config(alpha)).eval(), None)
    preset = info.preprocessing if info else Preprocessing(resolution)
    images = _calibration_batch(calibration, preset) if is_int8(runtime) else torch.empty(0)
    with tempfile.TemporaryDirectory() as tmp:
        predict = _predictor(model, preset, runtime, threads, Path(tmp), images)
        timing = _latency(predict, resolution, runs)
        top1 = _imagenette_top1(predict, data, info, limit) if info and data else None
    cost = model_cost(model.config, resolution)
    quant, float_ = (get_weights(f"mobilenet_v1_{alpha}_{resolution}{s}").value for s in ("_quant", ""))
    return Point(
        alpha, resolution, cost.mult_adds, cost.params, timing.median_ms, timing.p90_ms,
        float_.google_top1, quant.google_top1, top1, timing.load_before, timing.flags,
    )  # fmt: skip


def _calibration_batch(folder: Path | None, preset: Preprocessing, count: int = 64) -> torch.Tensor:
    """Calibration images from ``folder``, or random images when only latency matters."""
    if folder is None:
        return torch.rand(8, 3, preset.resolution, preset.resolution) * 2 - 1
    from ..deploy.quantize import calibration_files, load_batch

    return load_batch(calibration_files(folder, count), preset)


def _imagenette_top1(predict: Predictor, data: Path, info: Any, limit: int | None) -> float:
    from ..data.folders import find_samples
    from .evaluate import evaluate_samples

    samples, folders = find_samples(data, info.classes, read_wnids())
    if limit:
        samples = _first_per_class(samples, limit)
    pre, ignore = info.preprocessing, info.ignore
    return evaluate_samples(predict, samples, folders, pre, ignore=ignore, batch_size=32, workers=2).top1


def _first_per_class(samples: list[tuple[Path, int]], limit: int) -> list[tuple[Path, int]]:
    """The first ``limit`` samples of each class, in order."""
    seen: Counter[int] = Counter()
    kept = []
    for path, target in samples:
        seen[target] += 1
        if seen[target] <= limit:
            kept.append((path, target))
    return kept


def iter_rows(points: list[Point], runtime: str) -> Iterator[dict[str, Any]]:
    front = {p.label for p in pareto_front(points, lambda p: p.google_top1(runtime))}
    for p in points:
        yield {**p.to_dict(), "pareto": p.label in front}
