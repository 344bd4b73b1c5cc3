import itertools
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.cli import main
from mobilenet_v1.train.config import TrainConfig
from mobilenet_v1.train.optim import (
    RMSpropTF,
    build_optimizer,
    exponential_decay,
    finetune_schedule,
    param_groups,
    then_qat_phase,
    warmup_cosine,
)
from mobilenet_v1.train.setup import adapt_head, build_model
from mobilenet_v1.weights import load_weights

TINY = ["--alpha", "0.25", "--resolution", "32", "--batch-size", "4", "--workers", "0"]


def make_folder(root: Path, classes=("ant", "bee", "cat"), per_class: int = 8) -> Path:
    gen = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = (torch.rand(36, 44, 3, generator=gen) * 60 + 80 * c).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / name / f"{i}.jpg")
    Image.new("L", (40, 40), 128).save(root / classes[0] / "gray.png")
    (root / classes[-1] / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def run_cli(args, signal_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("MOBILENET_V1_TEST_SIGNAL", None)
    if signal_at:
        env["MOBILENET_V1_TEST_SIGNAL"] = signal_at
    cmd = [sys.executable, "-m", "mobilenet_v1", "train", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def kill_and_resume(args: list, run: Path, signal_at: str) -> None:
    """Train into ``run``, SIGKILLed as ``signal_at`` says, then ``--resume`` it to the end."""
    killed = run_cli([*args, "--output", run], signal_at=signal_at)
    assert killed.returncode == -9, killed.stderr
    resumed = run_cli(["--resume", run])
    assert resumed.returncode == 0, resumed.stderr


def assert_same_final_model(a: Path, b: Path) -> None:
    x, y = load_file(a / "model-final.safetensors"), load_file(b / "model-final.safetensors")
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished 2-epoch run (in-process), shared by the output and bad-input tests."""
    root = tmp_path_factory.mktemp("tiny")
    data = make_folder(root / "data")
    torch.set_num_threads(1)
    code = main(["train", "--data", str(data), "--output", str(root / "run"), *TINY, "--epochs", "2"])
    assert code == 0
    return data, root / "run"


def test_kill_and_resume_ends_with_the_same_weights(tmp_path):
    data = make_folder(tmp_path / "data")
    # 21 training images, batch 4: 5 steps an epoch; checkpoints every 3 steps and at epoch ends.
    common = [*TINY, "--data", data, "--epochs", "2", "--recipe", "modern", "--ema", "--checkpoint-steps", "3"]
    ref = run_cli([*common, "--output", tmp_path / "ref"])
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    interrupted = run_cli([*common, "--output", run], signal_at="2@2")  # Ctrl-C after step 2
    assert interrupted.returncode == 130, interrupted.stderr
    assert "--resume" in interrupted.stderr
    assert torch.load(run / "checkpoint-last.pt", weights_only=True)["progress"]["global_step"] == 2
    killed = run_cli(["--resume", run], signal_at="9@8")  # SIGKILL after step 8: last checkpoint at 6
    assert killed.returncode == -9, killed.stderr
    state = torch.load(run / "checkpoint-last.pt", weights_only=True)
    assert (state["progress"]["epoch"], state["progress"]["step_in_epoch"]) == (1, 1)
    resumed = run_cli(["--resume", run])
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model-final.safetensors", "model-best.safetensors"):
        a, b = load_file(tmp_path / "ref" / name), load_file(run / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a = torch.load(tmp_path / "ref" / "checkpoint-last.pt", weights_only=True)
    b = torch.load(run / "checkpoint-last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["progress"]["history"] == [
        {**row, "train_seconds": a["progress"]["history"][i]["train_seconds"]}
        for i, row in enumerate(b["progress"]["history"])
    ]


def test_worker_processes_do_not_change_the_result(tiny_run, tmp_path):
    data, _ = tiny_run
    args = ["train", "--data", str(data), "--alpha", "0.25", "--resolution", "32", "--batch-size", "4", "--epochs", "1"]
    assert main([*args, "--workers", "0", "--output", str(tmp_path / "w0")]) == 0
    assert main([*args, "--workers", "2", "--output", str(tmp_path / "w2")]) == 0
    a, b = (load_file(tmp_path / name / "model-final.safetensors") for name in ("w0", "w2"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_freeze_backbone_bf16_channels_last(tiny_run, tmp_path):
    data, run = tiny_run
    start = tmp_path / "start.safetensors"
    start.write_bytes((run / "model-final.safetensors").read_bytes())
    args = ["train", "--data", str(data), "--weights", str(start), "--batch-size", "4", "--workers", "0"]
    args += ["--epochs", "1", "--freeze-backbone", "--bf16", "--channels-last", "--output", str(tmp_path / "ft")]
    assert main(args) == 0
    before, after = load_file(start), load_file(tmp_path / "ft" / "model-final.safetensors")
    frozen = [k for k in before if k.startswith("features.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # BN statistics too
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_run_outputs(tiny_run):
    _, run = tiny_run
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["step"] == 10
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,step,train_loss")
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "classes.json").read_text()) == ["ant", "bee", "cat"]
    summary = json.loads((run / "summary.json").read_text())
    # The corrupt image is skipped (not fatal) and counted, in training and/or validation.
    assert summary["skipped_images"] >= 1 and summary["epochs"] == 2
    model, loaded = load_weights(run / "model-final.safetensors")  # what predict/eval/export do
    assert loaded.classes == ["ant", "bee", "cat"] and model.config.alpha == 0.25
    assert loaded.preprocessing.resolution == 32 and loaded.metadata["num_classes"] == "3"
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_resume_can_extend_a_finished_run(tiny_run, tmp_path):
    _, run = tiny_run
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("checkpoint-last.pt", "config.json"):
        (copy / name).write_bytes((run / name).read_bytes())
    assert main(["train", "--resume", str(copy), "--epochs", "3"]) == 0
    rows = (copy / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--data", "{tmp}/missing"], "not found"),
        (["--data", "{tmp}/empty"], "no class folders"),
        (["--data", "{tmp}/one"], "at least 2 classes"),
        (["--data", "{tmp}/noimages"], "no images"),
        (["--data", "{data}", "--recipe", "fancy"], "recipe"),
        (["--data", "{data}", "--batch-size", "0"], "batch-size"),
        (["--data", "{data}", "--batch-size", "64"], "batch size 64"),
        (["--data", "{data}", "--lr", "0"], "lr"),
        (["--data", "{data}", "--lr", "-1"], "lr"),
        (["--data", "{data}", "--epochs", "0"], "epochs"),
        (["--data", "{data}", "--worker-nice", "20"], "worker_nice must be at most 19"),
        (["--data", "{data}", "--output", "{run}"], "already exists"),
        (["--resume", "{tmp}/empty"], "no checkpoint"),
        (["--resume", "{tmp}/missing"], "not found"),
        (["--resume", "{run}", "--alpha", "0.5"], "alpha"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tiny_run, tmp_path, capsys, args, needle):
    data, run = tiny_run
    (tmp_path / "empty").mkdir()
    make_folder(tmp_path / "one", classes=("solo",))
    (tmp_path / "noimages" / "a").mkdir(parents=True)
    (tmp_path / "noimages" / "b").mkdir(parents=True)
    (tmp_path / "noimages" / "b" / "notes.txt").write_text("x")
    args = [a.format(tmp=tmp_path, data=data, run=run) for a in args]
    if "--output" not in args and "--resume" not in args:
        args += ["--output", str(tmp_path / "out")]
    before = {p: p.stat().st_mtime_ns for p in run.iterdir()}
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(["train", *TINY, *args]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out").exists()
    assert {p: p.stat().st_mtime_ns for p in run.iterdir()} == before


def tf_rmsprop_reference(w, grads, lrs, rho=0.9, momentum=0.9, eps=1.0, wd=0.0):
    ms, mom = [1.0] * len(w), [0.0] * len(w)
    for g, lr in zip(grads, lrs, strict=True):
        for i in range(len(w)):
            gi = g[i] + wd * w[i]
            ms[i] = rho * ms[i] + (1 - rho) * gi * gi
            mom[i] = momentum * mom[i] + lr * gi / math.sqrt(ms[i] + eps)
            w[i] -= mom[i]
    return w


def test_rmsprop_tf_matches_tensorflow_formula():
    w0 = [0.5, -1.0, 2.0]
    grads = [[0.1, -3.0, 0.5], [2.0, 0.2, -0.7], [-1.0, 1.0, 4.0]]
    lrs = [0.1, 0.05, 0.01]  # the lr changes between steps, as under the decay schedule
    param = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = RMSpropTF([param], lr=lrs[0], weight_decay=0.01)
    for g, lr in zip(grads, lrs, strict=True):
        opt.param_groups[0]["lr"] = lr
        param.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    expected = tf_rmsprop_reference(list(w0), grads, lrs, wd=0.01)
    assert torch.allclose(param.detach(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    torch_param = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    torch_opt = torch.optim.RMSprop([torch_param], lr=lrs[0], alpha=0.9, eps=1.0, momentum=0.9)
    torch_param.grad = torch.tensor(grads[0], dtype=torch.float64)
    torch_opt.step()
    tf_one_step = torch.tensor(tf_rmsprop_reference(list(w0), grads[:1], lrs[:1]), dtype=torch.float64)
    assert not torch.allclose(torch_param.detach(), tf_one_step)  # why RMSpropTF exists


def test_no_weight_decay_on_depthwise_bn_and_bias():
    model = mobilenet_v1(alpha=0.25, num_classes=5)
    groups = param_groups(model, 4e-5, backbone_lr_scale=0.1)
    assert [(g["backbone"], g["weight_decay"], g["lr_scale"]) for g in groups] == [
        (False, 4e-5, 1.0),
        (False, 0.0, 1.0),
        (True, 4e-5, 0.1),
        (True, 0.0, 0.1),
    ]
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    backbone = {id(p) for g in groups if g["backbone"] for p in g["params"]}
    for name, p in model.named_parameters():
        expect = (name.endswith("conv.weight") and ".dw." not in name) or name == "classifier.weight"
        assert (id(p) in decayed) == expect, name
        assert (id(p) in backbone) == name.startswith("features."), name
    assert len(decayed) == 1 + 13 + 1  # stem, 13 pointwise, FC


def test_schedules():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = exponential_decay(opt, steps_per_epoch=4, epochs_per_decay=2.5)  # decay every 10 steps
    lrs = []
    for _ in range(21):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[9] == 1.0 and lrs[10] == pytest.approx(0.94) and lrs[20] == pytest.approx(0.94**2)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == 1.0
    assert all(a > b for a, b in itertools.pairwise(lrs[2:])) and lrs[-1] < 0.05
    model = mobilenet_v1(alpha=0.25, num_classes=3)
    opt = build_optimizer("sgd", model, lr=1.0, weight_decay=0.0, backbone_lr_scale=0.1)
    sched = finetune_schedule(opt, total_steps=12, probe_steps=4, warmup_steps=2)
    head, body = [], []
    for _ in range(12):
        lrs = sched.get_last_lr()
        head.append(lrs[0])
        body.append(lrs[-1])
        opt.step()
        sched.step()
    assert head[0] == 1.0 and all(a > b for a, b in itertools.pairwise(head)) and head[-1] < 0.05
    assert body[:4] == [0.0] * 4 and body[4] == pytest.approx(0.05) and body[5] == pytest.approx(0.1)
    assert body[6] == pytest.approx(0.1) and all(a > b for a, b in itertools.pairwise(body[6:])) and body[-1] < 0.01
    opt = build_optimizer("sgd", model, lr=1.0, weight_decay=0.0, backbone_lr_scale=0.1)
    float_phase = finetune_schedule(opt, total_steps=12, probe_steps=4, warmup_steps=2)
    sched = then_qat_phase(opt, float_phase, start_step=12, steps=6)
    steps = []
    for _ in range(18):
        steps.append(sched.get_last_lr())
        opt.step()
        sched.step()
    assert [lrs[0] for lrs in steps[:12]] == pytest.approx(head) and [lrs[-1] for lrs in steps[:12]] == body
    qat_head, qat_body = [lrs[0] for lrs in steps[12:]], [lrs[-1] for lrs in steps[12:]]
    assert qat_head[0] == 1.0 and qat_body[0] == pytest.approx(0.1)  # each group's own lr again
    assert all(a > b for a, b in itertools.pairwise(qat_head)) and qat_head[-1] < 0.1


def test_adapt_head_keeps_rows_of_known_classes():
    model = mobilenet_v1(alpha=0.25, num_classes=4)
    old_w = model.classifier.weight.detach().clone()
    kept = adapt_head(model, ["background", "n1", "n2", "n3"], ["n3", "new", "n1"])
    assert kept == 2 and model.classifier.out_features == 3 and model.config.num_classes == 3
    assert torch.equal(model.classifier.weight[0], old_w[3]) and torch.equal(model.classifier.weight[2], old_w[1])


def test_finetune_from_google_weights_keeps_imagenet_rows(shared_data):
    wnids = (shared_data / "pretrained" / "imagenet_wnids.txt").read_text().split()
    google, _ = load_weights("mobilenet_v1_0.25_128_quant")
    config = TrainConfig(data="unused", output="unused", weights="mobilenet_v1_0.25_128_quant")
    model, preprocessing = build_model(config, ["n02102040", "my_class", "n01440764"])
    assert model.config.folded_bn and model.config.num_classes == 3 and preprocessing.resolution == 128
    rows = [wnids.index("n02102040") + 1, wnids.index("n01440764") + 1]  # output 0 is "background"
    assert torch.equal(model.classifier.weight[0], google.classifier.weight[rows[0]])
    assert torch.equal(model.classifier.bias[2], google.classifier.bias[rows[1]])
    assert torch.equal(model.features[3].dw.conv.weight, google.features[3].dw.conv.weight)
    with pytest.raises(ValueError, match="alpha"):
        build_model(replace(config, alpha=0.5), ["a", "b"])
