"""Image folders: one sub-folder per class, read into (path, label) samples and one dataset.

A training folder is either ``DIR/train`` + ``DIR/val`` (one sub-folder per class in
each), or a single folder of class sub-folders that is split into train/val by a fixed
seed (:func:`load_splits`). An evaluation folder's sub-folders are named by the
checkpoint's classes or by ImageNet WordNet ids (:func:`find_samples`).
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..untrusted import printable
from .images import IMAGE_EXTENSIONS, is_skipped_name, list_images, load_image

__all__ = ["UNLABELED", "DataSplit", "ImageFolder", "Sample", "find_classes", "find_samples", "load_splits"]

Sample = tuple[Path, int]
UNLABELED = -1  # the label of a photo without one (``train --unlabeled``)


@dataclass(frozen=True)
class DataSplit:
    """The class names and the (path, label) samples of the train and val sets, the files
    of the class folders left out as not images (extension -> count), and the training
    photos without labels (label :data:`UNLABELED`)."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    source: str  # "train/val folders" or "split of one folder"
    left_out: dict[str, int] = field(default_factory=dict)
    unlabeled: list[Path] = field(default_factory=list)


def find_classes(root: str | Path, min_classes: int = 2, left_out: Counter[str] | None = None) -> dict[str, list[Path]]:
    """Map each class sub-folder of ``root`` (sorted by name) to its image files; empty
    folders are no class. ``left_out``, when given, counts the other files by extension.

    Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` when there are no
    class folders, no images, fewer than ``min_classes`` classes with images, a class
    folder that is a link to the data folder (or above it) or to another class folder,
    or one holding files but no image this project reads (their types named).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not is_skipped_name(p.name))
    if not folders:
        raise ValueError(f"no class folders in {root} (expected {root}/<class>/<image> files)")
    _check_distinct(root, folders)
    classes = {}
    for folder in folders:
        others: Counter[str] = Counter()
        files = list_images(folder, others)
        if others and not files:
            kinds = ", ".join(f"{ext} ({n})" for ext, n in others.most_common(4))
            raise ValueError(
                f"class folder {printable(folder)} has no images this project reads, only {kinds}; "
                "convert them (JPEG/PNG/WebP/HEIC/AVIF/...) or move the folder out"
            )
        if left_out is not None:
            left_out.update(others)
        if files:
            classes[folder.name] = files
    if not classes:
        raise ValueError(f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    if len(classes) < min_classes:
        found = f"found {len(classes)}: {list(classes)}"
        raise ValueError(f"need at least {min_classes} classes with images in {root}, {found}")
    return classes


def _check_distinct(root: Path, folders: list[Path]) -> None:
    """No class folder is (a link to) the data folder, a folder above it, or another class."""
    top = root.resolve()
    seen: dict[Path, str] = {}
    for folder in folders:
        real = folder.resolve()
        if real == top or real in top.parents:
            where = "the data folder itself" if real == top else "a folder above the data folder"
            raise ValueError(f"class folder {printable(folder)} is a link to {where}: it would hold every image")
        if real in seen:
            raise ValueError(f"class folders {printable(seen[real])!r} and {printable(folder.name)!r} are one folder")
        seen[real] = folder.name


def _split_one_folder(root: Path, val_fraction: float, split_seed: int) -> DataSplit:
    """Stratified split: each class keeps ``val_fraction`` of its images (at least one),
    and at least one image to train on."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    left_out: Counter[str] = Counter()
    found = find_classes(root, left_out=left_out)
    classes = list(found)
    train: list[Sample] = []
    val: list[Sample] = []
    rng = random.Random(split_seed)
    for label, name in enumerate(classes):
        files = list(found[name])
        rng.shuffle(files)
        n_val = min(max(1, round(len(files) * val_fraction)), len(files) - 1)
        val += [(p, label) for p in sorted(files[:n_val])]
        train += [(p, label) for p in sorted(files[n_val:])]
    source = f"split of one folder (val {val_fraction:g}, seed {split_seed})"
    return DataSplit(classes, train, val, source, dict(left_out))


def load_splits(root: str | Path, *, val_fraction: float = 0.1, split_seed: int = 0) -> DataSplit:
    """Read ``root/train`` + ``root/val`` if ``root/train`` exists, else split ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    if not (root / "train").is_dir():
        return _split_one_folder(root, val_fraction, split_seed)
    if not (root / "val").is_dir():
        return _split_one_folder(root / "train", val_fraction, split_seed)
    left_out: Counter[str] = Counter()
    train_found = find_classes(root / "train", left_out=left_out)
    val_found = find_classes(root / "val", min_classes=1, left_out=left_out)
    classes = list(train_found)
    unknown = sorted(set(val_found) - set(classes))
    if unknown:
        raise ValueError(f"classes in {root / 'val'} missing from {root / 'train'}: {unknown[:5]}")
    index = {name: i for i, name in enumerate(classes)}
    train = [(p, index[name]) for name, files in train_found.items() for p in files]
    val = [(p, index[name]) for name, files in val_found.items() for p in files]
    return DataSplit(classes, train, val, "train/val folders", dict(left_out))


class ImageFolder(Dataset):
    """(path, label) samples decoded by :func:`~.images.load_image` and ``transform``.

    With ``skip_unreadable`` (training) an unreadable file yields ``None`` with a warning
    (``collate_skipping`` drops it), so a corrupt image never stops an epoch; otherwise
    (evaluation) it raises a one-line error naming the file. Indexed by ``i`` or by
    ``(i, seed)``: with a seed, the transform's randomness comes from a private generator
    state, leaving the caller's RNG untouched.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[torch.Tensor], torch.Tensor],
        *,
        skip_unreadable: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int] | None:
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, label = self.samples[index]
        try:
            image = load_image(path)
        except (OSError, ValueError, RuntimeError) as exc:
            if not self.skip_unreadable:
                raise
            warnings.warn(
                f"skipping unreadable image {printable(path)}: {printable(exc)}", RuntimeWarning, stacklevel=2
            )
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


def find_samples(
    root: str | Path, class_names: Sequence[str], wnids: Sequence[str] | None = None
) -> tuple[list[Sample], dict[str, int]]:
    """(image path, output index) pairs of an evaluation folder, and its sub-folder ->
    output index map.

    A sub-folder is one of ``class_names`` (a fine-tuned checkpoint's own classes, which
    may themselves be WordNet ids) or, for a model with ImageNet's outputs, a WordNet id
    from ``wnids`` (output ``index + len(class_names) - len(wnids)``, so 1 for 1001
    outputs: Google's output 0 is "background").
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    offset = len(class_names) - len(wnids) if wnids else -1
    by_wnid = {w: i + offset for i, w in enumerate(wnids or ())} if offset >= 0 else {}
    by_name = {name: i for i, name in enumerate(class_names)}
    folders: dict[str, int] = {}
    samples: list[Sample] = []
    if not any(p.is_dir() for p in root.iterdir()):
        raise ValueError(f"no images in {root} (expected one sub-folder of images per class)")
    for name, images in find_classes(root, min_classes=1).items():
        target = by_name.get(name, by_wnid.get(name))
        if target is None:
            raise ValueError(f"folder {root / name} is neither an ImageNet WordNet id nor a class of the checkpoint")
        folders[name] = target
        samples += [(p, target) for p in images]
    return samples, folders
