"""The steps before the first training step: check the run, build the model and the loaders.

``prepare_run`` validates everything (data folder, settings, resume folder) before any
file is written, so a mistake never clobbers an existing run. ``build_model`` starts from
scratch or from pretrained weights; with weights, the classifier is replaced for the
folder's classes, keeping the rows of classes the old head already knew (Google's
1001-output models: ImageNet class k is row k + 1, row 0 is "background").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..builders import mobilenet_v1
from ..data.folders import DataSplit, load_splits
from ..data.transforms import Preprocessing
from ..model import MobileNetV1
from ..weights import load_weights, read_wnids
from .checkpoint import LAST, find_checkpoint, load_checkpoint
from .config import SCRATCH_ALPHA, SCRATCH_RESOLUTION, TrainConfig

__all__ = ["RunPlan", "adapt_head", "build_model", "prepare_run"]


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
        return _prepare_resume(Path(resume), overrides)
    assert config is not None
    run_dir = Path(config.output)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise FileExistsError(f"output folder {run_dir} already exists and is not empty (use --resume {run_dir})")
    split = _load_data(config)
    return RunPlan(config, split, run_dir, None)


def _prepare_resume(run_dir: Path, overrides: dict[str, Any]) -> RunPlan:
    settings = run_dir / "config.json"
    if not (run_dir / LAST).is_file() and settings.is_file():
        # Killed before its first checkpoint (config.json is written first): run it again from the start.
        config = replace(TrainConfig.load(settings, **overrides), output=str(run_dir))
        return RunPlan(config, _load_data(config), run_dir, None)
    checkpoint = load_checkpoint(find_checkpoint(run_dir))
    saved = TrainConfig(**checkpoint["config"])
    for key in ("alpha", "resolution", "weights", "recipe", "batch_size"):
        value = overrides.pop(key, None)
        if value is not None and value != getattr(saved, key):
            raise ValueError(f"the checkpoint in {run_dir} has {key} {getattr(saved, key)!r}, not {value!r}")
    config = replace(saved, output=str(run_dir), **{k: v for k, v in overrides.items() if v is not None})
    split = _load_data(config)
    if split.classes != checkpoint["classes"]:
        raise ValueError(f"the classes in {config.data} differ from those of the run in {run_dir}")
    return RunPlan(config, split, run_dir, checkpoint)


def _load_data(config: TrainConfig) -> DataSplit:
    split = load_splits(config.data, val_fraction=config.val_fraction, split_seed=config.seed)
    if len(split.train) < config.batch_size:
        raise ValueError(f"batch size {config.batch_size} is larger than the {len(split.train)} training images")
    if not split.val:
        raise ValueError(f"no validation images in {config.data}")
    return split


def build_model(config: TrainConfig, classes: list[str]) -> tuple[MobileNetV1, Preprocessing]:
    """A model for ``classes`` and its input preprocessing, from scratch or from ``config.weights``."""
    if config.weights is None:
        alpha = SCRATCH_ALPHA if config.alpha is None else config.alpha
        model = mobilenet_v1(alpha=alpha, num_classes=len(classes), dropout=config.dropout)
        return model, Preprocessing(SCRATCH_RESOLUTION if config.resolution is None else config.resolution)
    model, loaded = load_weights(config.weights)
    if config.alpha is not None and config.alpha != model.config.alpha:
        raise ValueError(f"weights {config.weights} have alpha {model.config.alpha:g}, not {config.alpha:g}")
    preprocessing = loaded.preprocessing
    if config.resolution is not None:
        preprocessing = replace(preprocessing, resolution=config.resolution)
    adapt_head(model, _head_names(loaded.classes), classes)
    return model, preprocessing


def _head_names(classes: list[str]) -> list[str]:
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
