"""The steps before the first training step: check the run, build the model and the loaders.

``prepare_run`` validates everything (data folder, settings, device, resume folder and
its files) before any file is written, so a mistake never clobbers an existing run: a
run folder owned by a live process is refused (:func:`.runlock.check_not_running`),
so is a run folder inside the data folder (its files would become a class of the next
run) or the data folder inside it, and a resume that would change a setting fixed at
the start of the run (:data:`.config.FIXED_AT_START`: the split seed, the model, ...).

``build_model`` starts from scratch or from pretrained weights; with weights, the
classifier is replaced for the folder's classes, keeping the rows of classes the old
head already knew (Google's 1001-output models: ImageNet class k is row k + 1, row 0 is
"background"), and a quantization-aware run folds batch norm into the convolutions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..builders import mobilenet_v1
from ..config import MobileNetV1Config
from ..cost import model_cost
from ..data.folders import DataSplit, load_splits
from ..data.images import image_folder
from ..data.transforms import Preprocessing
from ..fold import fuse_bn
from ..model import MobileNetV1
from ..untrusted import printable
from ..weights import load_weights, read_wnids
from ..weights.download import sha256sum
from .checkpoint import LAST, check_checkpoint, find_checkpoint, load_checkpoint
from .config import (
    FIXED_AT_START,
    SCRATCH_ALPHA,
    SCRATCH_RESOLUTION,
    TrainConfig,
    changed_fixed_settings,
    check_device,
)
from .runlock import LOCK, check_not_running

__all__ = ["RunPlan", "adapt_head", "build_model", "head_names", "prepare_run"]


@dataclass
class RunPlan:
    """A checked run: its settings, data, folder and (when resuming) checkpoint."""

    config: TrainConfig
    split: DataSplit
    run_dir: Path
    checkpoint: dict[str, Any] | None


def prepare_run(config: TrainConfig | None, resume: str | None = None, **overrides: Any) -> RunPlan:
    """Check a new run (``config``) or a run to resume (``resume`` folder + ``overrides``)."""
    if resume is not None:
        unknown = sorted(set(overrides) - {f.name for f in fields(TrainConfig)})
        if unknown:
            raise ValueError(f"unknown setting {unknown[0]!r} to resume with")
        return _prepare_resume(Path(resume), overrides)
    if not isinstance(config, TrainConfig):
        raise ValueError(f"prepare_run needs a TrainConfig or a folder to resume, got {config!r}")
    run_dir = Path(config.output)
    config = _absolute(config)
    _check_folders(config, run_dir)
    check_memory(config)
    stale_lock = check_not_running(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(_counts(p, stale_lock) for p in run_dir.iterdir())):
        raise FileExistsError(
            f"output folder {run_dir} already exists and is not empty (resume it: resume='{run_dir}')"
        )
    _check_creatable(run_dir)
    split = _load_data(config)
    return RunPlan(config, split, run_dir, None)


def _counts(entry: Path, stale_lock: bool) -> bool:
    """Whether ``entry`` makes a run folder non-empty (a stale lock alone does not)."""
    return not (stale_lock and entry.name == LOCK)


def _prepare_resume(run_dir: Path, overrides: dict[str, Any]) -> RunPlan:
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder to resume not found: {run_dir}")
    check_not_running(run_dir)
    settings = run_dir / "config.json"
    if not (run_dir / LAST).is_file() and settings.is_file():
        # Killed before its first checkpoint (config.json is written first): run it again from
        # the start. Nothing was trained yet, so every setting may still change.
        config = replace(TrainConfig.load(settings, **overrides), output=str(run_dir))
        _check_folders(config, run_dir)
        return RunPlan(config, _load_data(config), run_dir, None)
    path = find_checkpoint(run_dir)
    checkpoint = check_checkpoint(load_checkpoint(path), path)
    saved = TrainConfig.from_dict(checkpoint["config"], path)
    changed = changed_fixed_settings(saved, overrides)
    if changed:
        raise ValueError(f"cannot resume {run_dir} with a changed setting fixed at its start: {'; '.join(changed)}")
    given = {k: v for k, v in overrides.items() if v is not None and k not in FIXED_AT_START}
    config = replace(saved, output=str(run_dir), **given)
    _check_teacher(config, checkpoint, run_dir)
    _check_folders(config, run_dir)
    split = _load_data(config)
    if split.classes != checkpoint["classes"]:
        raise ValueError(f"the classes in {config.data} differ from those of the run in {run_dir}")
    return RunPlan(config, split, run_dir, checkpoint)


def teacher_fingerprint(spec: str) -> str | None:
    """The sha256 of the teacher's file (of ``model.safetensors`` in a saved folder), or
    ``None`` for a registry name, whose files are fixed (and checked where a hash is known):
    a run remembers it, so that a resume with another file under the same name is refused."""
    path = Path(spec)
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    return sha256sum(path) if path.is_file() else None


def _check_teacher(config: TrainConfig, checkpoint: dict[str, Any], run_dir: Path) -> None:
    """The teacher's file is the one the run started with (its sha256, kept in checkpoints)."""
    started = checkpoint.get("teacher_sha256")
    if config.teacher and started and teacher_fingerprint(config.teacher) != started:
        raise ValueError(
            f"the teacher {printable(config.teacher)} is not the file the run in {run_dir} started with "
            f"(sha256 {started[:12]}...): resume with that file"
        )


ACTIVATION_COPIES = 3  # tensors kept per layer output for the backward pass (conv, batch norm, activation)


def check_memory(config: TrainConfig, available: int | None = None) -> None:
    """Refuse, before the run folder exists, a run from scratch whose activations alone
    cannot fit in the memory available (``MemAvailable``), rather than fail minutes later:
    the feature maps of Table 1 at the run's width, input size and batch, each kept about
    :data:`ACTIVATION_COPIES` times for the backward pass, in float32."""
    if config.weights is not None:
        return  # the width comes with the weights: known once they are read
    available = _available_memory() if available is None else available
    if available is None:
        return
    alpha = SCRATCH_ALPHA if config.alpha is None else config.alpha
    size = SCRATCH_RESOLUTION if config.resolution is None else config.resolution
    cost = model_cost(MobileNetV1Config(alpha=alpha, variant=config.variant), size)
    per_image = sum(layer.out_channels * layer.output_size[0] * layer.output_size[1] for layer in cost.layers)
    need = per_image * config.batch_size * 4 * ACTIVATION_COPIES
    if need > available:
        raise ValueError(
            f"training at alpha {alpha:g}, {size} px, batch {config.batch_size} keeps about {need / 2**30:.1f} GB of "
            f"activations, more than the {available / 2**30:.1f} GB of memory available: lower the batch size "
            "or the resolution"
        )


def _available_memory() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes (Linux), else ``None``."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _absolute(config: TrainConfig) -> TrainConfig:
    """The run's paths made absolute, so that a resume from another folder reads the same data."""
    paths = {"data": config.data}
    paths |= {name: getattr(config, name) for name in ("weights", "teacher", "unlabeled") if getattr(config, name)}
    found = {name: os.path.abspath(value) for name, value in paths.items() if Path(value).exists()}
    return replace(config, **found)


def _check_folders(config: TrainConfig, run_dir: Path) -> None:
    """The device exists here, and the run folder and the data folder do not hold each other."""
    check_device(config.device)
    out, data = run_dir.resolve(), Path(config.data).resolve()
    if out == data or data in out.parents:
        where = "is the data folder" if out == data else f"is inside the data folder {config.data}"
        raise ValueError(
            f"run folder {run_dir} {where}: its files would become a class of the next run; "
            "choose an output folder outside the data folder"
        )
    if out in data.parents:
        raise ValueError(f"data folder {config.data} is inside the run folder {run_dir}; move one out of the other")
    if config.unlabeled is not None:
        unlabeled = Path(config.unlabeled).resolve()
        if out == unlabeled or unlabeled in out.parents or out in unlabeled.parents:
            raise ValueError(
                f"run folder {run_dir} and unlabeled folder {config.unlabeled} hold one another: the run's images "
                "(curves.png) would become training photos; keep them apart"
            )


def _check_creatable(run_dir: Path) -> None:
    """The run folder (or its nearest existing parent) is a writable folder."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FileNotFoundError(f"cannot create run folder {run_dir}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot create run folder {run_dir}: {existing} is not writable")


def _load_data(config: TrainConfig) -> DataSplit:
    split = load_splits(config.data, val_fraction=config.val_fraction, split_seed=config.seed)
    if len(split.train) < config.batch_size:
        raise ValueError(f"batch size {config.batch_size} is larger than the {len(split.train)} training images")
    if not split.val:
        raise ValueError(f"no validation images in {config.data}")
    if config.unlabeled is not None:
        split = replace(split, unlabeled=_unlabeled_photos(Path(config.unlabeled), split))
    return split


def _unlabeled_photos(folder: Path, split: DataSplit) -> list[Path]:
    """The images below ``folder`` (any tree, no classes); none of them a validation photo,
    whose soft labels would leak the validation set into training."""
    photos = image_folder(folder, "unlabeled")
    val = {path.resolve() for path, _ in split.val}
    leaked = sum(photo.resolve() in val for photo in photos)
    if leaked:
        raise ValueError(
            f"unlabeled folder {folder} holds {leaked} of the validation photos: their teacher's labels would leak "
            "the validation set into training; give a folder without them"
        )
    return photos


def build_model(config: TrainConfig, classes: list[str]) -> tuple[MobileNetV1, Preprocessing]:
    """A model for ``classes`` and its input preprocessing, from scratch or from ``config.weights``."""
    if config.weights is None:
        alpha = SCRATCH_ALPHA if config.alpha is None else config.alpha
        model = mobilenet_v1(alpha=alpha, num_classes=len(classes), variant=config.variant, dropout=config.dropout)
        return model, Preprocessing(SCRATCH_RESOLUTION if config.resolution is None else config.resolution)
    model, loaded = load_weights(config.weights)
    if config.variant != model.config.variant:
        raise ValueError(f"weights {config.weights} are the {model.config.variant} model, not {config.variant}")
    if config.alpha is not None and config.alpha != model.config.alpha:
        raise ValueError(f"weights {config.weights} have alpha {model.config.alpha:g}, not {config.alpha:g}")
    preprocessing = loaded.preprocessing
    if config.resolution is not None:
        preprocessing = replace(preprocessing, resolution=config.resolution)
    adapt_head(model, head_names(loaded.classes), classes)
    if config.qat_epochs and not model.config.folded_bn:
        # Quantization-aware training trains the folded layers the int8 model computes
        # (Jacob et al., 2018): the trained batch norm goes into its conv, exactly.
        model = fuse_bn(model).train()
    return model, preprocessing


def head_names(classes: list[str]) -> list[str]:
    """Names of the old head's rows; for Google's 1001 ImageNet outputs, WordNet ids
    (what ImageNet-style folders such as Imagenette are named by) where the list is at hand."""
    wnids = read_wnids() if len(classes) == 1001 and classes[0] == "background" else None
    return ["background", *wnids] if wnids else classes


def adapt_head(model: MobileNetV1, old_classes: list[str] | None, classes: list[str]) -> int:
    """Give ``model`` a head for ``classes``; rows of classes in ``old_classes`` are kept.

    Returns how many rows were carried over (0 for a fresh head).
    """
    if old_classes == classes and model.config.num_classes == len(classes):
        return len(classes)
    old = model.classifier
    index = {name: i for i, name in enumerate(old_classes or []) if i < old.out_features}
    model.reset_classifier(len(classes))
    kept = 0
    with torch.no_grad():
        for row, name in enumerate(classes):
            if name in index:
                model.classifier.weight[row] = old.weight[index[name]]
                model.classifier.bias[row] = old.bias[index[name]]
                kept += 1
    return kept
