"""Stored soft labels: the teacher runs once per stored view, not once per epoch.

Live distillation (:class:`~.distill.Teacher`) runs the teacher on every augmented batch of
every epoch, which dominates a run's cost on a CPU. FKD (Shen & Xing, 2022) and ReLabel
(Yun et al., 2021) store the teacher's outputs for a few random crops of each image once
and replay those crops. Here the crops are the run's own seeded augmentation: view ``v`` of
image ``i`` is the augmentation drawn with ``sample_seed(seed, v, i)``, and epoch ``e``
replays view ``e mod views`` (``teacher_views``, 4 by default), so storing a view needs no
crop boxes, only the teacher's ``TOPK`` largest logits and their classes (float16 and
int16). With at most ``TOPK`` classes the stored logits are exact.

The store is cached under the cache folder (``soft_labels/<key>.pt``), keyed by the
teacher's file (its sha256), the training photos (paths, sizes, modification times), the
seed, the preprocessing and augmentation, the views and the classes: any change is another
key, so a stale store is never used, and another run on the same data and teacher reuses
it (the labelling pass is one-off). Under torchrun each of the W processes labels its share
of the photos (rank r: photos r, r + W, ...) and the shares are summed into every process's
store (each is zero outside its share, so the sum is exact); rank 0 caches it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from ..data.folders import ImageFolder
from ..files import atomic_write
from ..weights.download import cache_dir
from . import distributed as dist
from .distill import Teacher
from .loaders import collate_skipping, sample_seed

__all__ = ["TOPK", "SoftLabels", "store_key"]

TOPK = 10  # logits kept per view (all of them for up to 10 classes)
MISSING = -1e4  # the logit of a class outside the stored top-k: probability 0, finite


def store_key(
    teacher: str, teacher_sha256: str | None, dataset: ImageFolder, seed: int, views: int, recipe: dict
) -> str:
    """What the store depends on, hashed: teacher, photos, seed, views, augmentation, classes."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"teacher": teacher if teacher_sha256 is None else teacher_sha256, "seed": seed,
                              "views": views, "topk": TOPK, **recipe}, sort_keys=True).encode())  # fmt: skip
    for path, label in dataset.samples:
        stat = Path(path).stat()
        digest.update(f"{Path(path).resolve()}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class _Views(Dataset):
    """Every photo of ``dataset`` augmented as view ``view`` (its seeded augmentation)."""

    def __init__(self, dataset: ImageFolder, seed: int, view: int) -> None:
        self.dataset, self.seed, self.view = dataset, seed, view

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        item = self.dataset[(index, sample_seed(self.seed, self.view, index))]
        return None if item is None else (item[0], index)  # unreadable: left out, as in training


@dataclass
class SoftLabels:
    """The teacher's top-k logits for every view of every training photo."""

    values: torch.Tensor  # (views, N, k) float16
    classes: torch.Tensor  # (views, N, k) int16
    num_classes: int

    def targets(self, epoch: int, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Teacher logits (N, classes) for the photos ``indices`` in ``epoch``."""
        view = epoch % len(self.values)
        values = self.values[view, indices].float()
        full = torch.full((len(indices), self.num_classes), MISSING)
        full.scatter_(1, self.classes[view, indices].long(), values)
        return full.to(device)

    @classmethod
    def load_or_label(
        cls, key: str, teacher: Teacher, dataset: ImageFolder, seed: int, views: int, num_classes: int,
        env: dist.DistEnv, batch_size: int, workers: int,
    ) -> SoftLabels:  # fmt: skip
        """The cached store of ``key``, or label it now (every process its share) and cache it."""
        path = cache_dir() / "soft_labels" / f"{key}.pt"
        missing = dist.all_reduce_sum(torch.tensor([int(env.is_main and not path.is_file())]), env)  # rank 0's
        if int(missing):
            start = time.monotonic()
            share = cls._label(teacher, dataset, seed, views, num_classes, batch_size, workers, env)
            values = dist.all_reduce_sum(share.values.float(), env).half()  # float16 -> float32 -> float16: exact
            classes = dist.all_reduce_sum(share.classes.int(), env).short()
            store = cls(values, classes, num_classes)
            if env.is_main:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(path) as tmp:
                    torch.save({"values": values, "classes": classes, "num_classes": num_classes}, tmp)
                processes = f" on {env.world_size} processes" if env.is_distributed else ""
                print(
                    f"soft labels: the teacher labelled {views} views x {len(dataset)} photos{processes} in "
                    f"{time.monotonic() - start:.0f} s (one-off; cached in {path})",
                    file=sys.stderr,
                )
            return store
        if env.is_main:
            print(f"soft labels: {views} views x {len(dataset)} photos from the cache ({path})", file=sys.stderr)
        data = torch.load(path, weights_only=True)
        values, classes = data["values"], data["classes"]
        if values.shape[:2] != (views, len(dataset)) or int(data["num_classes"]) != num_classes:
            raise ValueError(f"soft-label cache {path} does not fit this run (remove it to label again)")
        return cls(values, classes, num_classes)

    @classmethod
    @torch.no_grad()
    def _label(
        cls, teacher: Teacher, dataset: ImageFolder, seed: int, views: int, num_classes: int, batch_size: int,
        workers: int, env: dist.DistEnv,
    ) -> SoftLabels:  # fmt: skip
        """The teacher's top-k logits for this process's share of the photos (``env.rank``,
        ``env.rank + env.world_size``, ...); zero for the others'."""
        k = min(TOPK, num_classes)
        values = torch.zeros(views, len(dataset), k, dtype=torch.float16)
        classes = torch.zeros(views, len(dataset), k, dtype=torch.int16)
        share = range(env.rank, len(dataset), env.world_size)
        bar = tqdm(total=views * len(share), desc="soft labels", unit="view", disable=not env.is_main, mininterval=1.0)
        with bar:  # the labelling pass takes minutes for a large teacher on a CPU: show its progress
            for view in range(views):
                loader = DataLoader(
                    Subset(_Views(dataset, seed, view), share), batch_size=batch_size, num_workers=workers,
                    collate_fn=collate_skipping, generator=torch.Generator().manual_seed(seed),
                )  # fmt: skip  # its own generator: labelling leaves the run's random state as it was
                for images, indices, skipped in loader:
                    if len(indices):
                        top = teacher(images).topk(k, dim=1)
                        values[view, indices] = top.values.half().cpu()
                        classes[view, indices] = top.indices.to(torch.int16).cpu()
                    bar.update(len(indices) + skipped)
        return cls(values, classes, num_classes)
