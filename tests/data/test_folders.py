import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from mobilenet_v1.data.folders import ImageFolder, find_classes, load_splits
from mobilenet_v1.data.transforms import Preprocessing, train_transform
from mobilenet_v1.train.loaders import SeededSampler, collate_skipping, lower_priority, sample_seed


def write_images(folder: Path, n: int, mode: str = "RGB", size=(40, 36), fmt: str = "JPEG") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.{'jpg' if fmt == 'JPEG' else fmt.lower()}"
        Image.new(mode, size, color=(i * 20) % 255 if mode in ("L", "P") else None).save(path, fmt)
        paths.append(path)
    return paths


def test_find_classes_sorted_and_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        find_classes(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class folders"):
        find_classes(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="no images"):
        find_classes(tmp_path)
    write_images(tmp_path / "b", 2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        find_classes(tmp_path)
    write_images(tmp_path / "a" / "nested", 1)
    classes = find_classes(tmp_path)
    assert list(classes) == ["a", "b"] and len(classes["a"]) == 1 and len(classes["b"]) == 2


def test_split_of_one_folder_is_stratified_disjoint_and_seeded(tmp_path):
    for name in ("x", "y", "z"):
        write_images(tmp_path / name, 10)
    split = load_splits(tmp_path, val_fraction=0.2, split_seed=3)
    assert split.classes == ["x", "y", "z"]
    assert len(split.val) == 6 and len(split.train) == 24
    assert {label for _, label in split.val} == {0, 1, 2}
    assert not {p for p, _ in split.val} & {p for p, _ in split.train}
    assert load_splits(tmp_path, val_fraction=0.2, split_seed=3) == split
    assert load_splits(tmp_path, val_fraction=0.2, split_seed=4).val != split.val


def test_train_val_folders(tmp_path):
    for name in ("cat", "dog"):
        write_images(tmp_path / "train" / name, 3)
    write_images(tmp_path / "val" / "dog", 2)
    split = load_splits(tmp_path)
    assert split.classes == ["cat", "dog"] and len(split.train) == 6
    assert [label for _, label in split.val] == [1, 1]
    write_images(tmp_path / "val" / "cow", 1)
    with pytest.raises(ValueError, match="cow"):
        load_splits(tmp_path)


def test_image_modes_are_converted_and_corrupt_files_skipped(tmp_path):
    paths = [
        write_images(tmp_path / "gray", 1, mode="L")[0],
        write_images(tmp_path / "cmyk", 1, mode="CMYK")[0],
        write_images(tmp_path / "rgba", 1, mode="RGBA", fmt="PNG")[0],
    ]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    dataset = ImageFolder([(p, i) for i, p in enumerate(paths)] + [(bad, 3)], lambda x: x, skip_unreadable=True)
    for i in range(3):
        image, label = dataset[i]
        assert image.shape == (3, 36, 40) and image.dtype == torch.uint8 and label == i
    with pytest.warns(RuntimeWarning, match="bad.jpg"):
        assert dataset[3] is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images, labels, skipped = collate_skipping([dataset[0], dataset[3], dataset[1]])
    assert images.shape == (2, 3, 36, 40) and labels.tolist() == [0, 1] and skipped == 1
    images, labels, skipped = collate_skipping([None, None])
    assert images.numel() == 0 and len(labels) == 0 and skipped == 2


def test_seeded_augmentation_is_reproducible_and_leaves_global_rng(tmp_path):
    path = write_images(tmp_path, 1, size=(64, 48))[0]
    dataset = ImageFolder([(path, 0)], train_transform(Preprocessing(32), strong=True))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a, _ = dataset[(0, 123)]
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)
    b, _ = dataset[(0, 123)]
    c, _ = dataset[(0, 124)]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_seeded_sampler_resumes_inside_an_epoch():
    base = DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=5)
    sampler = SeededSampler(base, seed=5)
    sampler.set_epoch(1)
    full = list(sampler)
    assert sorted(i for i, _ in full) == list(range(10))
    assert all(s == sample_seed(5, 1, i) for i, s in full)
    sampler.set_epoch(1, skip=4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(2)
    assert [i for i, _ in sampler] != [i for i, _ in full]


class _WorkerReport(torch.utils.data.Dataset):
    """Two items, each what ``report()`` returns inside the worker."""

    def __init__(self, report: Callable[[], int]) -> None:
        self.report = report

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return self.report()


@pytest.mark.skipif(not hasattr(os, "nice"), reason="no os.nice on this platform")
def test_lower_priority_renices_the_workers_only():
    parent = os.nice(0)
    loader = torch.utils.data.DataLoader(
        _WorkerReport(lambda: os.nice(0)), batch_size=1, num_workers=1, worker_init_fn=lower_priority(3)
    )
    assert [int(x) for x in loader] == [min(parent + 3, 19)] * 2
    assert os.nice(0) == parent
    assert lower_priority(0) is None


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="no SCHED_IDLE on this platform")
def test_idle_workers_run_in_sched_idle_and_the_parent_keeps_its_policy():
    parent = os.sched_getscheduler(0)
    report = _WorkerReport(lambda: os.sched_getscheduler(0))
    loader = torch.utils.data.DataLoader(
        report, batch_size=1, num_workers=1, worker_init_fn=lower_priority(0, idle=True)
    )
    assert [int(x) for x in loader] == [os.SCHED_IDLE] * 2
    assert os.sched_getscheduler(0) == parent != os.SCHED_IDLE
