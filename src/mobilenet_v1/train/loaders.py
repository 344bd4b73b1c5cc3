"""The training and validation loaders: seeded per-sample augmentation, resumable order,
workers that stay out of the training step's way, unreadable images skipped.

Augmentation is reproducible: each sample is drawn with a seed derived from
``(seed, epoch, index)``, so a batch is the same whichever worker decodes it and whether
or not the run was interrupted and resumed (see :mod:`.trainer`). A corrupt or unreadable
image never stops an epoch: it is skipped with a warning and counted
(:func:`collate_skipping` reports how many were dropped from each batch).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler, default_collate

from ..data.folders import UNLABELED, DataSplit, ImageFolder
from ..data.transforms import Preprocessing, eval_transform, train_transform
from . import distributed as dist
from .config import TrainConfig

__all__ = [
    "CALIBRATION_IMAGES",
    "PREFETCH_FACTOR",
    "IndexedFolder",
    "PairedViews",
    "SeededSampler",
    "augmentation",
    "build_loaders",
    "calibration_batch",
    "collate_skipping",
    "lower_priority",
    "sample_seed",
]

CALIBRATION_IMAGES = 200  # training photos whose mean the QAT phase's bias correction takes


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A per-sample augmentation seed: the same wherever and whenever it is drawn."""
    return (seed * 1_000_003 + epoch * 10_007 + index) * 2_654_435_761 % (2**62)


def lower_priority(increment: int, idle: bool = False) -> Callable[[int], None] | None:
    """A DataLoader ``worker_init_fn`` that lowers each worker's CPU priority.

    When the workers and the training step share the cores, a worker that preempts one
    thread of the step's OpenMP team stalls the whole team at its next barrier. ``idle``
    puts the workers in Linux's ``SCHED_IDLE`` class: they run when the step leaves a core
    idle (waiting for data included), never preempting it (docs/training.md: 0.72 -> 0.80
    of the synthetic step at alpha 0.25 on 2 cores, against ``nice`` 10). Otherwise, or
    where there is no ``SCHED_IDLE``, ``nice`` by ``increment`` (0.59 -> 0.68 against 0).
    ``None`` when there is nothing to lower.
    """
    idle = idle and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE")
    if not idle and (increment == 0 or not hasattr(os, "nice")):
        return None
    return functools.partial(_lower_worker, increment, idle)


def _lower_worker(increment: int, idle: bool, worker_id: int) -> None:
    if idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(increment)


def collate_skipping(batch: list[tuple | None], fields: int = 2) -> tuple:
    """Stack the readable samples (``(image, label, ...)`` tuples of ``fields`` items) and
    add how many were skipped: ``(images, labels, ..., skipped)``."""
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), *(torch.empty(0, dtype=torch.long) for _ in range(fields - 1)), skipped
    return *default_collate(good), skipped


class IndexedFolder(ImageFolder):
    """An :class:`ImageFolder` whose samples also carry their index: stored soft labels
    are looked up by it (:mod:`.soft_labels`)."""

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int] | None:
        item = super().__getitem__(key)
        return None if item is None else (*item, key[0] if isinstance(key, tuple) else key)


class SeededSampler(Sampler):
    """Yield ``(index, sample_seed)`` in ``base``'s order, starting after ``skip`` samples.

    ``base`` is the epoch's sampler (``distributed.make_sampler``: a seeded shuffle, one
    shard per process); ``skip`` resumes inside an epoch, past the samples that the
    interrupted run already consumed.
    """

    def __init__(self, base: Sampler, seed: int, views: int = 0) -> None:
        self.base = base
        self.seed = seed
        self.views = views  # > 0: epoch e draws the augmentations of epoch e mod views (stored soft labels)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        view = self.epoch % self.views if self.views else self.epoch
        for i in list(self.base)[self.skip :]:
            yield i, sample_seed(self.seed, view, i)

    def __len__(self) -> int:
        return max(len(self.base) - self.skip, 0)


PREFETCH_FACTOR = 4  # batches queued per worker: idle workers decode in the step's gaps, a deeper queue rides
# out the busy stretches


def augmentation(config: TrainConfig, preprocessing: Preprocessing, resolution: int | None = None) -> Callable:
    """The run's training augmentation, to uint8 crops of ``resolution`` (by default
    ``preprocessing``'s).

    Its random draws (crop box, flip, TrivialAugment's operation and strength) do not
    depend on the output size, so one sample seed gives the same view at any resolution: a
    teacher sees the student's view at its own resolution (:mod:`.soft_labels`). Only the
    modern recipe's extras are sized in output pixels: TrivialAugment's translations and
    random erasing's box.
    """
    recipe = config.recipe_defaults
    if resolution is not None:
        preprocessing = replace(preprocessing, resolution=resolution)
    return train_transform(preprocessing, min_scale=recipe.min_scale, strong=recipe.strong_augment, to_float=False)


class PairedViews:
    """One augmentation drawn once and rendered for the student and for a teacher of
    another resolution (live distillation): ``(student view, teacher view)``."""

    def __init__(self, student: Callable, teacher: Callable) -> None:
        self.student, self.teacher = student, teacher

    def __call__(self, image: Any) -> tuple[torch.Tensor, torch.Tensor]:
        state = torch.get_rng_state()
        view = self.student(image)
        torch.set_rng_state(state)  # the same draws again
        return view, self.teacher(image)


def build_loaders(
    config: TrainConfig,
    split: DataSplit,
    preprocessing: Preprocessing,
    env: dist.DistEnv,
    teacher_resolution: int | None = None,
) -> tuple[DataLoader, SeededSampler, DataLoader]:
    """Training loader (seeded per-sample augmentation, resumable) and validation loader.

    Both yield uint8 batches; the loop normalizes them on its device (``float_input``).
    With a live teacher of another ``teacher_resolution`` a training batch's images are
    the pair ``[student views, teacher views]`` (:class:`PairedViews`).
    """
    unlabeled = [(photo, UNLABELED) for photo in split.unlabeled]  # the teacher's soft labels only
    augment = augmentation(config, preprocessing)
    if config.teacher_labels == "live" and teacher_resolution not in (None, preprocessing.resolution):
        augment = PairedViews(augment, augmentation(config, preprocessing, teacher_resolution))
    train_set = IndexedFolder(split.train + unlabeled, augment, skip_unreadable=True)
    val_set = ImageFolder(split.val, eval_transform(preprocessing, to_float=False), skip_unreadable=True)
    views = config.teacher_views if config.teacher_labels == "stored" else 0
    base = dist.make_sampler(train_set, env, shuffle=True, seed=config.seed)
    sampler = SeededSampler(base, seed=config.seed, views=views)
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
    indexed = functools.partial(collate_skipping, fields=3)  # (images, labels, indices, skipped)
    train_loader = DataLoader(
        train_set, batch_size=config.batch_size, sampler=sampler, drop_last=True, **(common | {"collate_fn": indexed})
    )
    val_sampler = dist.make_eval_sampler(val_set, env)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, sampler=val_sampler, **common)
    return train_loader, sampler, val_loader


def calibration_batch(split: DataSplit, preprocessing: Preprocessing, count: int = CALIBRATION_IMAGES) -> torch.Tensor:
    """``count`` training photos spread evenly over the training set (every class), in the
    validation transform, as one uint8 batch; unreadable photos are left out."""
    samples = split.train[:: max(1, len(split.train) // count)][:count]
    dataset = ImageFolder(samples, eval_transform(preprocessing, to_float=False), skip_unreadable=True)
    images = [item[0] for item in (dataset[i] for i in range(len(dataset))) if item is not None]
    return torch.stack(images)
