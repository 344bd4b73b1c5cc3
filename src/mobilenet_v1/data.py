"""Image-folder datasets for training and fine-tuning.

A data folder is either ``DIR/train`` + ``DIR/val`` (one sub-folder per class in each),
or a single folder of class sub-folders that is split into train/val by a fixed seed.
A corrupt or unreadable image never stops an epoch: it is skipped with a warning and
counted (``collate_skipping`` reports how many were dropped from each batch).

Augmentation is reproducible: each sample is drawn with a seed derived from
``(seed, epoch, index)``, so a batch is the same whichever worker decodes it and whether
or not the run was interrupted and resumed (see ``train.py``).
"""

from __future__ import annotations

import functools
import os
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler, default_collate

from .transforms import IMAGE_EXTENSIONS, load_image

__all__ = [
    "DataSplit",
    "ImageFolder",
    "SeededSampler",
    "collate_skipping",
    "find_classes",
    "load_splits",
    "lower_priority",
    "sample_seed",
]

Sample = tuple[Path, int]


@dataclass(frozen=True)
class DataSplit:
    """The class names and the (path, label) samples of the train and val sets."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    source: str  # "train/val folders" or "split of one folder"


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def find_classes(root: str | Path, min_classes: int = 2) -> dict[str, list[Path]]:
    """Map each class sub-folder of ``root`` (sorted by name) to its image files.

    Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` when there are no
    class folders, no images, or fewer than ``min_classes`` classes with images.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"no class folders in {root} (expected {root}/<class>/<image> files)")
    classes = {f.name: _image_files(f) for f in folders}
    classes = {name: files for name, files in classes.items() if files}
    if not classes:
        raise ValueError(f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    if len(classes) < min_classes:
        found = f"found {len(classes)}: {list(classes)}"
        raise ValueError(f"need at least {min_classes} classes with images in {root}, {found}")
    return classes


def _split_one_folder(root: Path, val_fraction: float, split_seed: int) -> DataSplit:
    """Stratified split: each class keeps ``val_fraction`` of its images (at least one)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    found = find_classes(root)
    classes = list(found)
    train: list[Sample] = []
    val: list[Sample] = []
    rng = random.Random(split_seed)
    for label, name in enumerate(classes):
        files = list(found[name])
        rng.shuffle(files)
        n_val = max(1, round(len(files) * val_fraction)) if len(files) > 1 else 0
        val += [(p, label) for p in sorted(files[:n_val])]
        train += [(p, label) for p in sorted(files[n_val:])]
    return DataSplit(classes, train, val, f"split of one folder (val {val_fraction:g}, seed {split_seed})")


def load_splits(root: str | Path, *, val_fraction: float = 0.1, split_seed: int = 0) -> DataSplit:
    """Read ``root/train`` + ``root/val`` if ``root/train`` exists, else split ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    if not (root / "train").is_dir():
        return _split_one_folder(root, val_fraction, split_seed)
    if not (root / "val").is_dir():
        return _split_one_folder(root / "train", val_fraction, split_seed)
    train_found = find_classes(root / "train")
    val_found = find_classes(root / "val", min_classes=1)
    classes = list(train_found)
    unknown = sorted(set(val_found) - set(classes))
    if unknown:
        raise ValueError(f"classes in {root / 'val'} missing from {root / 'train'}: {unknown[:5]}")
    index = {name: i for i, name in enumerate(classes)}
    train = [(p, index[name]) for name, files in train_found.items() for p in files]
    val = [(p, index[name]) for name, files in val_found.items() for p in files]
    return DataSplit(classes, train, val, "train/val folders")


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A per-sample augmentation seed: the same wherever and whenever it is drawn."""
    return (seed * 1_000_003 + epoch * 10_007 + index) * 2_654_435_761 % (2**62)


class ImageFolder(Dataset):
    """(path, label) samples decoded to tensors; an unreadable file yields ``None``.

    Indexed by ``i`` or by ``(i, seed)``: with a seed, the transform's randomness comes
    from a private generator state, leaving the caller's RNG untouched.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int] | None:
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, label = self.samples[index]
        try:
            image = load_image(path)
        except (OSError, ValueError, RuntimeError) as exc:
            warnings.warn(f"skipping unreadable image {path}: {exc}", RuntimeWarning, stacklevel=2)
            return None
        if seed is None:
            return self.transform(image), label
        # The transforms draw from the CPU generator only; seeding it alone is 1 us where
        # torch.manual_seed, which also seeds every accelerator's generators, is ~60 us.
        state = torch.get_rng_state()
        torch.default_generator.manual_seed(seed)
        try:
            return self.transform(image), label
        finally:
            torch.set_rng_state(state)


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


def collate_skipping(batch: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack the readable samples; also return how many were skipped."""
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images, labels = default_collate(good)
    return images, labels, skipped


class SeededSampler(Sampler):
    """Yield ``(index, sample_seed)`` in ``base``'s order, starting after ``skip`` samples.

    ``base`` is the epoch's sampler (``distributed.make_sampler``: a seeded shuffle, one
    shard per process); ``skip`` resumes inside an epoch, past the samples that the
    interrupted run already consumed.
    """

    def __init__(self, base: Sampler, seed: int) -> None:
        self.base = base
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in list(self.base)[self.skip :]:
            yield i, sample_seed(self.seed, self.epoch, i)

    def __len__(self) -> int:
        return max(len(self.base) - self.skip, 0)
