"""Quantization-aware training as the last epochs of a run (``--qat-epochs``): the saved
weights lie on their int8 grids and carry them, every int8 export keeps them and computes
what the QAT model computed, resume is exact, and bad settings are one line."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch
from safetensors import safe_open
from test_finetune_distill import GOOGLE, imagenette_subset
from test_train import TINY, assert_same_final_model, kill_and_resume, make_folder, run_cli

from mobilenet_v1.cli import main
from mobilenet_v1.deploy.quantize import calibration_files, load_batch
from mobilenet_v1.fold import fuse_bn
from mobilenet_v1.model import ConvBNAct
from mobilenet_v1.train import qat
from mobilenet_v1.train.config import TrainConfig
from mobilenet_v1.train.setup import build_model
from mobilenet_v1.weights import load_weights
from mobilenet_v1.weights.grids import ChannelGrid, Grid, Int8Grids, int8_grids, layers_on_grids, quantized_layers

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    return imagenette_subset(shared_data, tmp_path_factory.mktemp("photos"), train=16, val=12)


COMMON = ["--weights", GOOGLE, "--epochs", "2", "--qat-epochs", "1", "--batch-size", "16", "--workers", "0"]
COMMON += ["--train-backbone", "--checkpoint-steps", "3"]  # 64 photos: 4 steps an epoch, QAT in steps 5-8


@pytest.fixture(scope="module")
def qat_run(photos, tmp_path_factory):
    run = tmp_path_factory.mktemp("qat") / "run"
    done = run_cli(["--data", photos, *COMMON, "--output", run])
    assert done.returncode == 0, done.stderr
    return run, done.stderr


def test_qat_run_says_so_and_saves_weights_on_the_grids_they_carry(qat_run):
    run, stderr = qat_run
    assert "quantization-aware training: the last 1 epoch with int8 arithmetic in the loop" in stderr
    assert "epoch 2: quantization-aware training from here" in stderr
    model, loaded = load_weights(run / "model-final.safetensors")
    grids = int8_grids(loaded)
    assert isinstance(grids, Int8Grids) and len(grids.weights) == 28
    # a step per output channel for each convolution trained off Google's grids (TFLite's
    # int8 scheme; a layer these few steps left on its Google grid keeps it), one grid for the classifier
    google = int8_grids(load_weights(GOOGLE)[1])
    convs = list(zip(grids.weights[:-1], google.weights[:-1], strict=True))
    assert all(isinstance(w, ChannelGrid) or w == g for w, g in convs)
    assert sum(isinstance(w, ChannelGrid) for w, _ in convs) >= 20
    assert [len(w.scales) for w in grids.weights[:3]] == [8, 8, 16] and isinstance(grids.weights[-1], Grid)
    assert layers_on_grids(fuse_bn(model), grids) == [True] * 28  # every layer, so every export keeps them all
    with safe_open(run / "model-final.safetensors", "pt") as f:  # a plain model: no QAT state saved with it
        assert not any("parametrizations" in key or qat.RANGES in key for key in f.keys())


def test_the_qat_phase_starts_from_the_model_the_float_schedule_finished_with(qat_run, photos, tmp_path):
    """``--epochs 2 --qat-epochs 1`` is the plain 1-epoch run, then one QAT epoch: the float
    epochs follow the same schedule to its end (same validation loss, to the last bit)."""
    plain = tmp_path / "plain"
    args = [*COMMON, "--output", plain]
    args[args.index("--epochs") + 1] = "1"
    del args[args.index("--qat-epochs") : args.index("--qat-epochs") + 2]
    done = run_cli(["--data", photos, *args])
    assert done.returncode == 0, done.stderr
    run, _ = qat_run
    first = (run / "metrics.csv").read_text().splitlines()[1].split(",")
    alone = (plain / "metrics.csv").read_text().splitlines()[1].split(",")
    assert first[:6] == alone[:6]  # epoch, step, train and val loss and top-1


def test_a_checkpoint_with_batch_norm_is_folded_for_the_qat_phase(tmp_path):
    """Weights trained from scratch carry batch norm; a QAT run starts from them folded
    (what they computed, exactly) and saves weights on the grids they carry."""
    data = make_folder(tmp_path / "data")
    scratch = tmp_path / "scratch"
    assert main(["train", "--data", str(data), "--output", str(scratch), *TINY, "--epochs", "1"]) == 0
    weights = scratch / "model-final.safetensors"
    trained, loaded = load_weights(weights)
    assert not trained.config.folded_bn
    config = TrainConfig(data=str(data), output=str(tmp_path / "unused"), weights=str(weights), epochs=1, qat_epochs=1)
    model, _ = build_model(config, loaded.classes)
    assert model.config.folded_bn and model.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), trained.eval()(x), rtol=1e-4, atol=1e-5)
    run = tmp_path / "qat"
    args = ["train", "--data", str(data), "--output", str(run), "--weights", str(weights), *TINY[4:]]
    assert main([*args, "--epochs", "1", "--qat-epochs", "1"]) == 0
    model, loaded = load_weights(run / "model-final.safetensors")
    assert model.config.folded_bn and layers_on_grids(model, int8_grids(loaded)) == [True] * 28


def test_every_int8_export_keeps_the_qat_grids_and_computes_the_qat_model(qat_run, photos, tmp_path):
    """The exported files against the QAT model's own fake-quantized forward pass: the same
    top class on every photo but near-ties, the logits within a few steps (1 on average),
    the first layer's uint8 outputs equal but for a rare 1-step rounding tie between float
    and integer requantization (such ties then spread with depth: about 70 % of the last
    layer's bytes are equal)."""
    from mobilenet_v1.deploy.formats import export_as, load_exported
    from mobilenet_v1.deploy.onnx import read_metadata
    from mobilenet_v1.weights.google_tflite.int8 import Int8MobileNetV1
    from mobilenet_v1.weights.google_tflite.reader import read_tflite

    run, _ = qat_run
    model, loaded = load_weights(run / "model-final.safetensors")
    grids, pre = int8_grids(loaded), loaded.preprocessing
    images = load_batch(calibration_files(photos / "val", 48), pre)
    simulated = copy.deepcopy(model)
    qat.instrument(simulated, pre, grids, [True] * 28)
    with torch.no_grad():
        reference = simulated.eval()(images)
    # Rounding ties spread with depth (a few logit steps): the top class is the same
    # wherever the simulated model's top two are more than 8 steps apart.
    step = grids.outputs[-1].scale
    two = reference.topk(2, dim=1).values
    clear = two[:, 0] - two[:, 1] > 8 * step
    assert clear.float().mean() > 0.6  # most photos
    for fmt, suffix in (("onnx-int8", "onnx"), ("tflite-int8", "tflite"), ("executorch-int8", "pte")):
        if fmt == "executorch-int8":
            pytest.importorskip("executorch")
        path = tmp_path / f"m.{suffix}"
        export_as(fmt, model, path, pre, labels=loaded.classes, calibration=images, grids=grids)
        exported, info = load_exported(path)
        assert info.metadata["quantization"] == "tflite", fmt  # every layer on the QAT grids
        out = exported(images)
        top = out.argmax(1)
        assert torch.equal(top[clear], reference.argmax(1)[clear]), fmt
        assert (top == reference.argmax(1)).float().mean() >= 0.95, fmt
        if fmt != "tflite-int8":  # logits (LiteRT's file ends in its softmax), on the same grid
            error = (out - reference).abs() / step
            assert error.mean() <= 1 and error.max() <= 6, (fmt, error.mean(), error.max())
    assert read_metadata(tmp_path / "m.onnx")["float_layers"] == "0"  # the first layers too
    first = []
    hook = next(m for m in simulated.modules() if isinstance(m, ConvBNAct)).register_forward_hook(
        lambda m, a, out: first.append(out)
    )
    with torch.no_grad():
        simulated(images)
    hook.remove()
    litert, _ = load_exported(tmp_path / "m.tflite")
    pixels = litert.to_pixels(images).permute(0, 2, 3, 1).contiguous()
    emulated = Int8MobileNetV1(read_tflite(tmp_path / "m.tflite"), kernels="xnnpack")
    ours = dict(emulated.forward_intermediates(pixels))["conv0"]  # int8 in the file: its values + 128
    grid = grids.outputs[0]
    expected = (first[0] / grid.scale).round() + grid.zero_point
    difference = (ours.permute(0, 3, 1, 2).float() - expected).abs()
    assert difference.max() <= 1 and (difference == 0).float().mean() > 0.999  # a tie now and then


def test_saving_mid_phase_leaves_the_training_model_instrumented(photos):
    """A best epoch inside the QAT phase saves a finalized copy; the model keeps training
    with its fake quantization, and the next save finalizes it again."""
    model, loaded = load_weights(GOOGLE)
    pre = loaded.preprocessing
    qat.instrument(model, pre, int8_grids(loaded))
    images = load_batch(calibration_files(photos / "val", 8), pre)
    with torch.no_grad():
        before = model.eval()(images)
    first, grids = qat.finalize(model, pre)
    with torch.no_grad():
        assert torch.equal(model(images), before)  # still the fake-quantized forward pass
    model.train()(images).sum().backward()  # and it still trains
    second, again = qat.finalize(model, pre)
    a, b = first.state_dict(), second.state_dict()
    assert again == grids and a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert not any("parametrizations" in key for key in b)


def test_the_phase_starts_with_biases_corrected_for_the_new_grids(photos):
    """Layers off the starting grids have their biases lowered by the mean error of their
    rounded weights on the calibration images; layers that keep Google's grids keep theirs."""
    model, loaded = load_weights(GOOGLE)
    pre, grids = loaded.preprocessing, int8_grids(loaded)
    with torch.no_grad():  # as a fine-tune leaves them: channels whose ranges differ widely
        for conv in quantized_layers(model)[1:6]:
            conv.weight[: len(conv.weight) // 4] *= 20
    images = load_batch(calibration_files(photos / "train", 32), pre)
    with torch.no_grad():
        reference = model.eval()(images)
    errors, biases = {}, {}
    for corrected in (False, True):
        simulated = copy.deepcopy(model)
        qat.instrument(simulated, pre, grids, calibration=images if corrected else None)
        with torch.no_grad():
            errors[corrected] = (simulated.eval()(images) - reference).abs().mean()
        biases[corrected] = [conv.parametrizations.bias.original.clone() for conv in quantized_layers(simulated)]
    moved = [not torch.equal(a, b) for a, b in zip(biases[False], biases[True], strict=True)]
    assert moved == [index in range(1, 6) for index in range(28)]
    assert errors[True] < 0.8 * errors[False], errors


def test_qat_resumes_exactly_after_a_kill_in_the_phase(qat_run, photos, tmp_path):
    run = tmp_path / "run"
    kill_and_resume(["--data", photos, *COMMON], run, signal_at="9@7")  # checkpoint at step 6
    ref, _ = qat_run
    assert_same_final_model(ref, run)
    with safe_open(ref / "model-final.safetensors", "pt") as f, safe_open(run / "model-final.safetensors", "pt") as g:
        assert json.loads(f.metadata()["int8_grids"]) == json.loads(g.metadata()["int8_grids"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--weights", GOOGLE, "--epochs", "2", "--qat-epochs", "3"],
            "--qat-epochs 3 is more than the run's --epochs 2",
        ),
        (["--weights", GOOGLE, "--qat-epochs", "1", "--ema"], "--qat-epochs 1 with --ema"),
        (["--alpha", "0.25", "--resolution", "32", "--qat-epochs", "1"], "needs trained weights to start from"),
    ],
)
def test_bad_qat_settings_are_one_line_exit_2_nothing_written(photos, tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(["train", "--data", str(photos), *args, "--workers", "0", "--output", str(tmp_path / "out")]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_qat_phase_under_torchrun(photos, tmp_path):
    """Two processes: the ranges are model buffers (rank 0's broadcast each step), the
    run saves weights on the grids they carry, as one process does."""
    from test_distributed import torchrun

    run = tmp_path / "ddp"
    args = ["-m", "mobilenet_v1", "train", "--data", photos, *COMMON, "--batch-size", "8", "--output", run]
    result = torchrun(args, nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es) x batch 8" in result.stderr
    model, loaded = load_weights(run / "model-final.safetensors")
    assert layers_on_grids(fuse_bn(model), int8_grids(loaded)) == [True] * 28
