"""Distillation from unlabelled photos (``--teacher T --unlabeled U``): the student learns the
teacher's soft labels on U besides the labelled photos, resumes exactly, and bad folders
are one line before anything is written."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_finetune_distill import CLASSES, GOOGLE, imagenette_subset
from test_train import assert_same_final_model, kill_and_resume, run_cli

from mobilenet_v1.cli import main
from mobilenet_v1.data.folders import UNLABELED
from mobilenet_v1.train.distill import distillation_loss


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    return imagenette_subset(shared_data, tmp_path_factory.mktemp("photos"), train=16, val=12)


@pytest.fixture(scope="module")
def unlabeled(shared_data, tmp_path_factory):
    """8 more photos of each class, in a tree without classes (one level nested)."""
    root = tmp_path_factory.mktemp("unlabeled")
    (root / "nested").mkdir()
    for i, cls in enumerate(CLASSES):
        for f in sorted((shared_data / "imagenette" / "train" / cls).iterdir())[28:36]:
            (root / ("nested" if i % 2 else "") / f.name).symlink_to(f)
    return root


COMMON = ["--teacher", GOOGLE, "--epochs", "2", "--batch-size", "16", "--workers", "0", "--checkpoint-steps", "3"]


def test_unlabelled_photos_are_trained_on_and_a_killed_run_resumes_exactly(photos, unlabeled, tmp_path):
    common = ["--data", photos, "--unlabeled", unlabeled, *COMMON]
    ref = run_cli([*common, "--output", tmp_path / "ref"])
    assert ref.returncode == 0, ref.stderr
    assert "training photos: 64 labelled and 32 unlabelled" in ref.stderr
    summary = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert summary["unlabeled_images"] == 32 and summary["steps"] == 2 * 96 // 16  # an epoch covers both
    run = tmp_path / "run"
    kill_and_resume(common, run, signal_at="9@8")  # SIGKILL after step 8: checkpoint at 6
    assert_same_final_model(tmp_path / "ref", run)
    changed = run_cli(["--resume", run, "--unlabeled", photos / "train"])
    assert changed.returncode == 2 and "unlabeled" in changed.stderr


def test_unlabelled_photos_take_the_teachers_share_of_the_loss_only():
    torch.manual_seed(0)
    logits, teacher = torch.randn(6, 4), torch.randn(6, 4)
    labels = torch.tensor([0, 1, UNLABELED, 3, UNLABELED, 2])
    soft = distillation_loss(logits, teacher, torch.full((6,), UNLABELED), 4.0, 0.7) / 0.7
    mixed = distillation_loss(logits, teacher, labels, 4.0, 0.7)
    known = labels != UNLABELED
    assert torch.allclose(mixed, 0.7 * soft + 0.3 * F.cross_entropy(logits[known], labels[known]))
    assert torch.isfinite(soft)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--unlabeled", "{unlabeled}"], "unlabeled needs a teacher (--teacher WEIGHTS)"),
        (["--teacher", GOOGLE, "--unlabeled", "{tmp}/missing"], "unlabeled folder not found"),
        (["--teacher", GOOGLE, "--unlabeled", "{tmp}/empty"], "no images in unlabeled folder"),
        (["--teacher", GOOGLE, "--unlabeled", "{photos}/val"], "holds 48 of the validation photos"),
        (["--teacher", GOOGLE, "--unlabeled", "{tmp}"], "hold one another"),
    ],
)
def test_bad_unlabeled_folder_is_one_line_exit_2_nothing_written(photos, unlabeled, tmp_path, capsys, extra, needle):
    (tmp_path / "empty").mkdir()
    extra = [a.format(tmp=tmp_path, unlabeled=unlabeled, photos=photos) for a in extra]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(["train", "--data", str(photos), *extra, "--workers", "0", "--output", str(out)]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def _photos_and_teacher(photos):
    """Two training photos of each class with the training augmentation (uint8), and
    Google's teacher mapped to the classes."""
    from mobilenet_v1.data.transforms import train_transform
    from mobilenet_v1.train.config import TrainConfig
    from mobilenet_v1.train.distill import Teacher
    from mobilenet_v1.train.loaders import IndexedFolder
    from mobilenet_v1.weights import load_weights

    _, loaded = load_weights(GOOGLE)
    samples = [(f, i) for i, cls in enumerate(CLASSES) for f in sorted((photos / "train" / cls).iterdir())[:2]]
    dataset = IndexedFolder(samples, train_transform(loaded.preprocessing, to_float=False), skip_unreadable=True)
    config = TrainConfig(data=str(photos), output="unused", teacher=GOOGLE)
    return samples, dataset, Teacher(config, list(CLASSES), torch.device("cpu"))


def test_stored_soft_labels_are_the_teachers_outputs_on_the_views_replayed(photos):
    """Epoch e replays view e mod views: its stored top-k logits are the teacher's on the
    very augmentation the student sees then (float16)."""
    from mobilenet_v1.train.loaders import sample_seed
    from mobilenet_v1.train.soft_labels import SoftLabels
    from mobilenet_v1.train.torchrun import DistEnv

    samples, dataset, teacher = _photos_and_teacher(photos)
    views = 3
    store = SoftLabels._label(teacher, dataset, 3, views, num_classes=4, batch_size=4, workers=0, env=DistEnv())
    assert store.values.shape[:2] == (views, len(samples))
    epoch = views + 1  # replays view 1
    indices = torch.arange(len(samples))
    images = torch.stack([dataset[(i, sample_seed(3, 1, i))][0] for i in range(len(samples))])
    live = teacher(images)
    stored = store.targets(epoch, indices, torch.device("cpu"))
    assert torch.allclose(stored, live, rtol=2e-3, atol=2e-2)
    other = torch.stack([dataset[(i, sample_seed(3, 2, i))][0] for i in range(len(samples))])
    assert not torch.allclose(teacher(other), live, atol=2e-2)  # another view is another crop


def test_each_process_labels_its_share_and_the_shares_sum_to_the_store(photos):
    """Under torchrun rank r of W labels photos r, r + W, ... and leaves the others zero:
    the shares' sum is the single process's store."""
    from mobilenet_v1.train.soft_labels import SoftLabels
    from mobilenet_v1.train.torchrun import DistEnv

    samples, dataset, teacher = _photos_and_teacher(photos)
    label = lambda env: SoftLabels._label(teacher, dataset, 3, 2, 4, 3, 0, env)  # noqa: E731
    whole = label(DistEnv())
    shares = [label(DistEnv(rank=r, world_size=3, local_rank=r)) for r in range(3)]
    for r, share in enumerate(shares):
        mine = torch.zeros(len(samples), dtype=torch.bool)
        mine[r::3] = True
        assert share.values[:, ~mine].eq(0).all() and share.classes[:, ~mine].eq(0).all()
        assert share.values[:, mine].ne(0).any()
    assert torch.equal(sum(s.classes.int() for s in shares), whole.classes.int())
    assert torch.allclose(sum(s.values.float() for s in shares), whole.values.float(), atol=2e-2)


def test_the_teacher_sees_the_students_crop_at_its_own_resolution(photos, tmp_path):
    """One sample seed, one crop and flip at any resolution: the teacher's 128 px view,
    shrunk to the student's 48 px, is the student's view (another seed's is not); a live
    teacher gets those views (PairedViews) and ends where the stored labels end."""
    from mobilenet_v1.data.transforms import Preprocessing
    from mobilenet_v1.train.config import TrainConfig
    from mobilenet_v1.train.loaders import IndexedFolder, PairedViews, augmentation, sample_seed

    config = TrainConfig(data=str(photos), output="unused", teacher=GOOGLE)
    student, teacher = augmentation(config, Preprocessing(48)), augmentation(config, Preprocessing(128))
    samples = [(f, i) for i, cls in enumerate(CLASSES) for f in sorted((photos / "train" / cls).iterdir())[:3]]
    paired, alone = IndexedFolder(samples, PairedViews(student, teacher)), IndexedFolder(samples, student)
    same, other = [], []
    for i in range(len(samples)):
        (view, big), label, index = paired[(i, sample_seed(3, 0, i))]
        assert big.shape == (3, 128, 128) and (label, index) == (samples[i][1], i)
        assert torch.equal(view, alone[(i, sample_seed(3, 0, i))][0])
        shrunk = F.interpolate(big[None].float(), size=48, mode="bilinear", antialias=True)[0]
        same.append((shrunk - view.float()).abs().mean())
        other.append((shrunk - alone[(i, sample_seed(3, 1, i))][0].float()).abs().mean())
    assert max(same) < 2 and min(other) > 10, (same, other)

    common = ["--data", photos, "--resolution", "48", "--epochs", "1", "--batch-size", "16", "--workers", "0"]
    common += ["--teacher", GOOGLE, "--train-backbone"]
    runs = {"stored": [], "live": ["--teacher-labels", "live"], "plain": ["--distill-weight", "0"]}
    for name, extra in runs.items():
        result = run_cli([*common, *extra, "--output", tmp_path / name])
        assert result.returncode == 0, result.stderr
    a, b, plain = (load_file(tmp_path / name / "model-final.safetensors") for name in runs)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-3  # float16 storage of the same targets
    assert max((a[k] - plain[k]).abs().max().item() for k in a) > 1e-2  # which the student learns from


def test_a_second_run_reuses_the_store_and_other_settings_label_again(photos, tmp_path):
    common = ["--data", photos, "--teacher", GOOGLE, "--epochs", "1", "--batch-size", "16", "--workers", "0"]
    first = run_cli([*common, "--output", tmp_path / "a"])
    again = run_cli([*common, "--output", tmp_path / "b"])
    seed = run_cli([*common, "--seed", "1", "--output", tmp_path / "c"])
    live = run_cli([*common, "--teacher-labels", "live", "--output", tmp_path / "d"])
    views = run_cli([*common, "--teacher-views", "2", "--output", tmp_path / "e"])
    for run in (first, again, seed, live, views):
        assert run.returncode == 0, run.stderr
    assert "soft labels: the teacher labelled 4 views x 64 photos" in first.stderr
    assert "soft labels: 4 views x 64 photos from the cache" in again.stderr
    assert "the teacher labelled" in seed.stderr  # another seed draws other views: a stale store is not used
    assert "soft labels" not in live.stderr and "its outputs live on every batch" in live.stderr
    assert "stored once for 2 views of each photo" in views.stderr
    assert "the teacher labelled 2 views x 64 photos" in views.stderr  # another count of views: another store
    a, b = load_file(tmp_path / "a" / "model-final.safetensors"), load_file(tmp_path / "b" / "model-final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the cached store is the one labelled


def test_stored_soft_labels_and_unlabelled_photos_under_torchrun(photos, unlabeled, tmp_path):
    """Both ranks label their share of the photos and replay the summed store, which rank
    0 caches: every photo's every view labelled (its top-k classes distinct)."""
    from test_distributed import torchrun

    args = ["-m", "mobilenet_v1", "train", "--data", photos, "--unlabeled", unlabeled, "--teacher", GOOGLE]
    args += ["--epochs", "1", "--batch-size", "8", "--workers", "0", "--seed", "5", "--output", tmp_path / "ddp"]
    result = torchrun(args, nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "2 process(es) x batch 8" in result.stderr
        and "soft labels: the teacher labelled 4 views x 96 photos on 2 processes" in result.stderr
    )
    cached = re.search(r"cached in (\S+\.pt)\)", result.stderr).group(1)
    classes = torch.load(cached, weights_only=True)["classes"]
    assert classes.shape[:2] == (4, 96) and all(len(set(row.tolist())) == 4 for row in classes.flatten(0, 1))
    assert (tmp_path / "ddp" / "model-final.safetensors").is_file()


def test_a_run_saved_before_stored_soft_labels_resumes_with_the_live_teacher():
    from mobilenet_v1.train.config import TrainConfig

    old = {"data": "d", "output": "o", "teacher": GOOGLE}  # a config.json without teacher_labels
    assert TrainConfig.from_dict(old, "config.json").teacher_labels == "live"
    assert TrainConfig(data="d", output="o", teacher=GOOGLE).teacher_labels == "stored"  # new runs
    assert TrainConfig.from_dict(old | {"teacher_labels": "stored"}, "config.json").teacher_views == 4


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"teacher_views": 0}, "teacher_views must be an integer >= 1, got 0"),
        ({"teacher_views": 2.5}, "teacher_views must be an integer >= 1, got 2.5"),
        ({"teacher_views": 1001}, "teacher_views must be at most 1000, got 1001"),
        ({"teacher_views": 2, "teacher_labels": "live"}, "teacher_views needs stored soft labels"),
        ({"teacher_views": 2, "teacher": None}, "teacher_views needs a teacher (--teacher WEIGHTS)"),
    ],
)
def test_teacher_views_are_checked(settings, message):
    from mobilenet_v1.train.config import TrainConfig

    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**({"data": "d", "output": "o", "teacher": GOOGLE} | settings))
    assert TrainConfig(data="d", output="o", teacher=GOOGLE, teacher_views=7).teacher_views == 7
