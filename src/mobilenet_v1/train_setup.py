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
from torch.utils.data import DataLoader

from . import distributed as dist
from .checkpoint import LAST, find_checkpoint, load_checkpoint
from .data import DataSplit, ImageFolder, SeededSampler, collate_skipping, load_splits, lower_priority
from .model import MobileNetV1, mobilenet_v1
from .train_config import TrainConfig
from .transforms import Preprocessing, eval_transform, train_transform

__all__ = ["RunPlan", "adapt_head", "build_loaders", "build_model", "prepare_run"]


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
        model = mobilenet_v1(alpha=config.alpha or 1.0, num_classes=len(classes), dropout=config.dropout)
        return model, Preprocessing(resolution=config.resolution or 224)
    from .weights import load_weights

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
    if len(classes) != 1001 or classes[0] != "background":
        return classes
    from .download import cache_dir, data_dir
    from .weights import WNIDS_FILE

    for folder in (cache_dir(), data_dir()):
        if folder is not None and (folder / WNIDS_FILE).is_file():
            wnids = (folder / WNIDS_FILE).read_text().split()
            if len(wnids) == 1000:
                return ["background", *wnids]
    return classes


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


PREFETCH_FACTOR = 4  # batches queued per worker: idle workers decode in the step's gaps, a deeper queue rides
# out the busy stretches


def build_loaders(
    config: TrainConfig, split: DataSplit, preprocessing: Preprocessing, env: dist.DistEnv
) -> tuple[DataLoader, SeededSampler, DataLoader]:
    """Training loader (seeded per-sample augmentation, resumable) and validation loader.

    Both yield uint8 batches; the loop normalizes them on its device (``float_input``).
    """
    recipe = config.recipe_defaults
    train_set = ImageFolder(
        split.train,
        train_transform(preprocessing, min_scale=recipe.min_scale, strong=recipe.strong_augment, to_float=False),
    )
    val_set = ImageFolder(split.val, eval_transform(preprocessing, to_float=False))
    sampler = SeededSampler(dist.make_sampler(train_set, env, shuffle=True, seed=config.seed), seed=config.seed)
    common: dict[str, Any] = {
        "num_workers": config.workers,
        "collate_fn": collate_skipping,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": config.workers > 0,
        "worker_init_fn": lower_priority(config.worker_nice, idle=config.worker_idle),
        "prefetch_factor": PREFETCH_FACTOR if config.workers > 0 else None,
        # Workers take their seeds from this generator, not from the global RNG, so
        # starting an epoch does not advance the RNG that dropout uses.
        "generator": torch.Generator().manual_seed(config.seed),
    }
    train_loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, drop_last=True, **common)
    val_sampler = dist.make_eval_sampler(val_set, env)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, sampler=val_sampler, **common)
    return train_loader, sampler, val_loader
