"""Fine-tuning by default (the finetune recipe) and distillation (Section 4.5), on tiny real photos."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_train import assert_same_final_model, kill_and_resume, run_cli

from mobilenet_v1.cli import main
from mobilenet_v1.fold import fuse_bn
from mobilenet_v1.train.config import DISTILL_TEMPERATURE, DISTILL_WEIGHT, RECIPES, TrainConfig
from mobilenet_v1.train.distill import distillation_loss, teacher_rows
from mobilenet_v1.train.distributed import DistEnv
from mobilenet_v1.train.setup import prepare_run
from mobilenet_v1.train.trainer import Trainer
from mobilenet_v1.weights import load_weights

GOOGLE = "mobilenet_v1_0.25_128_quant"
CLASSES = ("n01440764", "n02102040", "n02979186", "n03000684")  # tench, springer, cassette player, chain saw


def imagenette_subset(shared_data: Path, root: Path, train: int, val: int) -> Path:
    """The first ``train`` + ``val`` photos of four Imagenette classes, linked into ``root``."""
    for cls in CLASSES:
        files = sorted((shared_data / "imagenette" / "train" / cls).iterdir())
        for split, chosen in (("train", files[:train]), ("val", files[train : train + val])):
            (root / split / cls).mkdir(parents=True)
            for f in chosen:
                (root / split / cls / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    return imagenette_subset(shared_data, tmp_path_factory.mktemp("photos"), train=16, val=12)


def final_accuracy(run: Path) -> float:
    return json.loads((run / "summary.json").read_text())["final_val_acc"]


def test_whole_network_finetune_keeps_up_with_the_classifier_alone(photos, tmp_path):
    """With Google's weights and --train-backbone the whole network is fine-tuned, yet ends
    at least as accurate as training the classifier alone, less 2 of the 48 photos: the
    paper recipe used to destroy the pretrained features here (chance level)."""
    torch.set_num_threads(2)
    common = ["train", "--data", str(photos), "--weights", GOOGLE, "--epochs", "3", "--batch-size", "16"]
    assert main([*common, "--workers", "0", "--train-backbone", "--output", str(tmp_path / "whole")]) == 0
    assert main([*common, "--workers", "0", "--freeze-backbone", "--output", str(tmp_path / "head")]) == 0
    config = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert config["recipe"] == "finetune" and config["train_backbone"] and not config["freeze_backbone"]
    whole, head = final_accuracy(tmp_path / "whole"), final_accuracy(tmp_path / "head")
    assert whole >= head - 2 / 48 and whole > 0.5, (whole, head)
    # The backbone trained (after the probe), the classifier more than the backbone.
    start = load_file(tmp_path / "head" / "model-final.safetensors")
    tuned = load_file(tmp_path / "whole" / "model-final.safetensors")
    stem = "features.0.conv.weight"
    assert not torch.equal(start[stem], tuned[stem])


def test_finetune_on_few_photos_per_class_trains_the_classifier_alone_and_says_so(photos, tmp_path, capsys):
    """16 photos per class, no flags: the classifier alone (the whole-network phase lowers
    accuracy on small data), said on the run's first lines; the backbone is Google's."""
    argv = ["train", "--data", str(photos), "--weights", GOOGLE, "--epochs", "2", "--batch-size", "16"]
    argv += ["--workers", "0"]
    assert main([*argv, "--output", str(tmp_path / "r")]) == 0
    out = capsys.readouterr()
    assert "fine-tuning: the classifier alone (16 training photos per class, fewer than 300" in out.out + out.err
    tuned = load_file(tmp_path / "r" / "model-final.safetensors")
    google = load_weights(GOOGLE)[0].state_dict()
    assert torch.equal(tuned["features.0.conv.weight"], google["features.0.conv.weight"])
    assert not torch.equal(tuned["classifier.weight"], google["classifier.weight"][: len(CLASSES)])


def test_finetune_recipe_probes_first_then_trains_the_backbone_slower(photos, tmp_path, monkeypatch):
    config = TrainConfig(data=str(photos), output=str(tmp_path / "r"), weights=GOOGLE, epochs=3, batch_size=16)
    assert config.recipe == "finetune" and config.resolved_lr(16) == pytest.approx(0.0045 * 16 / 32)
    small = Trainer(prepare_run(config), DistEnv(), torch.device("cpu"))
    assert small.small_data and small.probe_steps == 0  # 16 photos per class: the classifier alone
    monkeypatch.setattr("mobilenet_v1.train.trainer.FINETUNE_MIN_PER_CLASS", 16)  # as if the data were large
    trainer = Trainer(prepare_run(config), DistEnv(), torch.device("cpu"))
    assert not trainer.small_data
    assert trainer.probe_steps == 4  # a third of 3 epochs x 4 steps
    assert not any(p.requires_grad for p in trainer.model_without_ddp.features.parameters())
    head_lr, backbone_lr = (trainer.optimizer.param_groups[i]["lr"] for i in (0, -1))
    assert backbone_lr == 0 and head_lr == pytest.approx(0.00225)
    images, labels, indices, _ = next(iter(trainer.train_loader))
    for _ in range(4):
        trainer.train_step(images, labels, indices)
        trainer.progress.global_step += 1
    assert trainer.model_without_ddp.features[0].conv.weight.grad is None  # no backward through it
    trainer.train_step(images, labels, indices)
    assert trainer.model_without_ddp.features[0].conv.weight.grad is not None
    head_lr, backbone_lr = (trainer.optimizer.param_groups[i]["lr"] for i in (0, -1))
    assert 0 < backbone_lr < 0.03 * head_lr


def test_distillation_loss_mixes_soft_targets_and_labels():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    teacher = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 4.0]])
    labels = torch.tensor([0, 2])
    t = 3.0
    soft = (F.softmax(teacher / t, 1) * (F.log_softmax(teacher / t, 1) - F.log_softmax(logits / t, 1))).sum(1).mean()
    hard = F.cross_entropy(logits, labels)
    assert distillation_loss(logits, teacher, labels, t, 0.25) == pytest.approx(0.25 * t * t * soft + 0.75 * hard)
    assert distillation_loss(logits, teacher, labels, t, 0.0) == pytest.approx(hard)
    assert distillation_loss(teacher, teacher, labels, t, 1.0) == pytest.approx(0.0, abs=1e-6)


def test_teacher_rows_map_imagenet_outputs_by_wordnet_id(shared_data):
    wnids = (shared_data / "pretrained" / "imagenet_wnids.txt").read_text().split()
    google = ["background", *[f"label {i}" for i in range(1000)]]
    assert teacher_rows("t", google, list(CLASSES)) == [wnids.index(c) + 1 for c in CLASSES]
    assert teacher_rows("t", ["b", "a"], ["a", "b"]) == [1, 0]
    with pytest.raises(ValueError, match="class 'cat' of the data is not among its 1001 classes"):
        teacher_rows("t", google, ["n01440764", "cat"])


def test_distillation_settings_default_and_validate():
    config = TrainConfig(data="d", output="o", teacher="t")
    assert (config.distill_temperature, config.distill_weight) == (DISTILL_TEMPERATURE, DISTILL_WEIGHT)
    assert TrainConfig(data="d", output="o").distill_weight is None
    # With pretrained weights a teacher brings its own recipe and schedule; given epochs stay.
    assert (config.recipe, config.epochs) == ("distill", 24)
    assert (TrainConfig(data="d", output="o").recipe, TrainConfig(data="d", output="o").epochs) == ("finetune", 10)
    assert TrainConfig(data="d", output="o", teacher="t", epochs=4).epochs == 4
    # From scratch a teacher brings the paper recipe with its rate decayed to 0 by a cosine.
    scratch = TrainConfig(data="d", output="o", teacher="t", scratch=True)
    assert (scratch.recipe, scratch.epochs, scratch.resolved_lr(32)) == ("distill-scratch", 10, 0.045)
    assert RECIPES["distill-scratch"] == replace(RECIPES["paper"], schedule="cosine")
    assert TrainConfig(data="d", output="o", scratch=True).recipe == "paper"
    assert config.resolved_lr(32) == TrainConfig(data="d", output="o").resolved_lr(32) == pytest.approx(0.0045)
    with pytest.raises(ValueError, match="recipe 'distill' needs pretrained weights"):
        TrainConfig(data="d", output="o", teacher="t", scratch=True, recipe="distill")


def batch_norms(model: torch.nn.Module) -> list[torch.nn.BatchNorm2d]:
    return [m for m in model.features.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_distill_recipe_unfolds_batch_norm_for_the_whole_network_phase(photos, tmp_path, monkeypatch):
    """Google's folded layers get batch norm back, the same model at the start; the probe
    leaves it alone (pretrained features, statistics kept), the whole-network phase trains
    it with batch statistics. The classifier alone or a QAT phase keep the folded layers."""
    monkeypatch.setattr("mobilenet_v1.train.trainer.FINETUNE_MIN_PER_CLASS", 16)  # as if the data were large
    config = TrainConfig(
        data=str(photos), output=str(tmp_path / "r"), weights=GOOGLE, teacher=GOOGLE, epochs=3, batch_size=16
    )
    assert config.recipe == "distill"
    trainer = Trainer(prepare_run(config), DistEnv(), torch.device("cpu"))
    model = trainer.model_without_ddp
    assert trainer.unfolded and not model.config.folded_bn and len(batch_norms(model)) == 27
    google, _ = load_weights(GOOGLE)
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(model.eval().features(images), google.features(images), atol=1e-4)
    start = {k: v.clone() for k, v in model.features.state_dict().items()}
    images, labels, indices, _ = next(iter(trainer.train_loader))
    trainer._set_train_modes()  # as the loop does at the start of an epoch
    assert not model.features.training and model.classifier.training
    for _ in range(trainer.probe_steps):  # 4: a third of 3 epochs x 4 steps
        trainer.train_step(images, labels, indices)
        trainer.progress.global_step += 1
    assert all(torch.equal(start[k], v) for k, v in model.features.state_dict().items())
    trainer.train_step(images, labels, indices)
    assert model.features.training
    bn = model.features[0].bn
    assert not torch.equal(bn.running_mean, start["0.bn.running_mean"]) and bn.weight.grad is not None
    head_lr, backbone_lr = (trainer.optimizer.param_groups[i]["lr"] for i in (0, -1))
    assert 0 < backbone_lr < head_lr
    qat = Trainer(prepare_run(replace(config, qat_epochs=1)), DistEnv(), torch.device("cpu"))
    assert not qat.unfolded and qat.model_without_ddp.config.folded_bn and not batch_norms(qat.model_without_ddp)
    monkeypatch.undo()
    small = Trainer(prepare_run(config), DistEnv(), torch.device("cpu"))
    assert small.small_data and not small.unfolded and not batch_norms(small.model_without_ddp)


def test_distill_recipe_end_to_end_exact_resume_and_saved_model(photos, tmp_path):
    """The default with a teacher: killed at the step the whole network starts to train and
    resumed, the same weights as the uninterrupted run; the saved model has its batch norm
    and folds back for export."""
    common = ["--data", photos, "--weights", GOOGLE, "--teacher", GOOGLE, "--train-backbone", "--epochs", "2"]
    common += ["--resolution", "64", "--batch-size", "16", "--workers", "0", "--checkpoint-steps", "3"]
    ref = run_cli([*common, "--output", tmp_path / "ref"])
    assert ref.returncode == 0, ref.stderr
    assert f"starting from {GOOGLE} (--scratch for random weights); recipe distill, 2 epochs" in ref.stderr
    assert "the classifier alone for the first 3 steps (linear probe)" in ref.stderr  # a third of 2 x 4
    assert "batch norm: back into the folded layers" in ref.stderr
    run = tmp_path / "run"
    kill_and_resume(common, run, signal_at="9@5")  # SIGKILL after step 5: checkpoint at 3, the probe's end
    assert_same_final_model(tmp_path / "ref", run)
    model, _ = load_weights(str(run / "model-final.safetensors"))
    assert not model.config.folded_bn and len(batch_norms(model)) == 27
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(fuse_bn(model)(images), model(images), atol=1e-4)


def test_distillation_end_to_end_and_exact_resume(photos, tmp_path):
    """A small student from scratch with Google's 0.25/128 as teacher (its 1001 outputs mapped
    to the four WordNet-id folders; it sees the student's 48 px crops at 128 px); killed
    and resumed, it ends with the same weights as the uninterrupted run."""
    common = ["--data", photos, "--alpha", "0.25", "--resolution", "48", "--batch-size", "16", "--epochs", "2"]
    common += ["--workers", "0", "--teacher", GOOGLE, "--distill-weight", "0.9", "--checkpoint-steps", "3"]
    ref = run_cli([*common, "--output", tmp_path / "ref"])
    assert ref.returncode == 0, ref.stderr
    assert "starting from scratch (random weights); recipe distill-scratch, 2 epochs" in ref.stderr
    assert (
        f"distilling from {GOOGLE} (it sees each of the student's crops at its own 128 px): loss 0.9 x teacher "
        "(temperature 4) + 0.1 x labels; its outputs stored once for 4 views of each photo and replayed"
    ) in ref.stderr
    saved = json.loads((tmp_path / "ref" / "config.json").read_text())
    assert (saved["teacher"], saved["distill_weight"], saved["distill_temperature"]) == (GOOGLE, 0.9, 4.0)
    run = tmp_path / "run"
    kill_and_resume(common, run, signal_at="9@5")  # SIGKILL after step 5: checkpoint at 3
    assert_same_final_model(tmp_path / "ref", run)
    changed = run_cli(["--resume", run, "--distill-weight", "0.5"])
    assert changed.returncode == 2 and "distill_weight 0.9 -> 0.5" in changed.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--teacher", "{tmp}/missing.safetensors"], "missing.safetensors"),
        (["--teacher", GOOGLE, "--data", "{named}"], "class 'ant' of the data is not among its 1001 classes"),
        (["--teacher", GOOGLE, "--distill-temperature", "0"], "distill_temperature must be a finite number > 0"),
        (["--teacher", GOOGLE, "--distill-weight", "1.5"], "distill_weight must be a finite number in [0, 1]"),
        (["--distill-weight", "0.5"], "distill_weight needs a teacher (--teacher WEIGHTS)"),
        (["--recipe", "finetune"], "recipe 'finetune' needs pretrained weights"),
        (["--scratch", "--weights", GOOGLE], f"scratch and weights {GOOGLE} exclude each other"),
    ],
)
def test_bad_distillation_input_one_line_exit_2_nothing_written(photos, tmp_path, capsys, args, needle):
    (tmp_path / "named" / "ant").mkdir(parents=True)
    (tmp_path / "named" / "bee").mkdir(parents=True)
    for cls, name in (("ant", "n01440764"), ("bee", "n02102040")):
        for f in sorted((photos / "train" / name).iterdir())[:4]:
            (tmp_path / "named" / cls / f.name).symlink_to(f.resolve())
    args = [a.format(tmp=tmp_path, named=tmp_path / "named") for a in args]
    if "--data" not in args:
        args += ["--data", str(photos)]
    tiny = ["--alpha", "0.25", "--resolution", "32", "--batch-size", "4", "--workers", "0"]
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(["train", *tiny, *args, "--output", str(tmp_path / "out")]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out").exists()


def test_finetune_with_teacher_under_torchrun(photos, tmp_path):
    """Two processes: the probe, the switch to the whole network (DDP wrapped again once the
    backbone takes gradients) and the teacher's targets run on every rank."""
    from test_distributed import torchrun

    args = ["-m", "mobilenet_v1", "train", "--data", photos, "--output", tmp_path / "ddp", "--resolution", "64"]
    args += ["--batch-size", "8", "--epochs", "2", "--workers", "0", "--teacher", GOOGLE, "--train-backbone"]
    result = torchrun(args, nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es) x batch 8 = global batch 16" in result.stderr
    assert "the classifier alone for the first 3 steps (linear probe)" in result.stderr  # of 2 x 4
    assert "batch norm: back into the folded layers" in result.stderr  # the distill recipe
    google, _ = load_weights(GOOGLE)
    tuned = load_file(tmp_path / "ddp" / "model-final.safetensors")
    assert not torch.equal(google.features[0].conv.weight, tuned["features.0.conv.weight"])
    assert "features.0.bn.running_var" in tuned
