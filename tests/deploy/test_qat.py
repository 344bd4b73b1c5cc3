"""Quantization-aware fine-tuning: a new folded model, closer int8 numerics, CLI guards."""

import json

import pytest
import torch
import torch.nn.functional as F

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.cli import main
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.deploy.onnx import OnnxModel, export_onnx
from mobilenet_v1.deploy.qat import qat_finetune
from mobilenet_v1.deploy.quantize import calibration_files, load_batch, quantize_onnx
from mobilenet_v1.weights import load_weights

STEPS = 60


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two spinning threads on a busy 2-core machine run ~100x slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = mobilenet_v1(alpha=0.25, activation="relu6", padding="same", num_classes=10)
    for m in model.modules():  # non-trivial BN so that folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.classifier.weight.data.mul_(100)  # confident logits (std ~4), as a trained model's
    return model.eval()


@pytest.fixture(scope="module")
def tuned():
    model, images, losses = _model(), torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(1)), []
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = qat_finetune(model, images, steps=STEPS, lr=1e-5, on_step=lambda step, loss: losses.append(loss))
    return model, before, images, losses, out


def test_returns_new_folded_model_and_leaves_input_untouched(tuned):
    model, before, _, _, out = tuned
    assert out is not model and out.config.folded_bn and not model.config.folded_bn
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in out.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not out.training and not any(p.requires_grad for p in out.parameters())
    assert not any(m._forward_hooks for m in out.modules())  # plain modules: exportable
    assert not torch.equal(out.features[5].pw.conv.weight, model.features[5].pw.conv.weight)


def test_weights_lie_on_symmetric_int8_grids(tuned):
    out = tuned[-1]
    w = out.features[3].pw.conv.weight.flatten(1)
    steps = w / (w.abs().amax(1, keepdim=True) / 127)
    torch.testing.assert_close(steps, steps.round(), atol=1e-3, rtol=0)
    stem = out.features[0].conv.weight.flatten(1)  # float layer: not on a grid
    assert (stem / (stem.abs().amax(1, keepdim=True) / 127)).frac().abs().max() > 0.1


def test_distillation_loss_decreases(tuned):
    losses = tuned[3]
    assert len(losses) == STEPS and all(loss >= 0 for loss in losses)
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])


def test_qat_int8_is_closer_to_float_than_ptq(tuned, tmp_path):
    model, _, images, _, out = tuned
    with torch.no_grad():
        ref = model(images)
    errors = {}
    for name, source in (("ptq", model), ("qat", out)):
        export_onnx(source, tmp_path / f"{name}.onnx", Preprocessing(64))
        quantize_onnx(tmp_path / f"{name}.onnx", tmp_path / f"{name}8.onnx", images)
        logits = OnnxModel(tmp_path / f"{name}8.onnx", threads=1)(images)
        agree = (logits.argmax(1) == ref.argmax(1)).float().mean()
        kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(ref, 1), log_target=True, reduction="batchmean")
        errors[name] = (float(agree), float((logits - ref).abs().mean()), float(kl))
    assert errors["qat"][0] >= errors["ptq"][0]
    assert errors["qat"][1] < errors["ptq"][1] and errors["qat"][2] < errors["ptq"][2]


def test_no_float_layers_quantizes_the_stem_too():
    images = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    out = qat_finetune(_model(), images, steps=2, lr=1e-5, batch_size=4, float_layers=0)
    stem = out.features[0].conv.weight.flatten(1)
    steps = stem / (stem.abs().amax(1, keepdim=True) / 127)
    torch.testing.assert_close(steps, steps.round(), atol=1e-3, rtol=0)
    assert not any(m._forward_pre_hooks for m in out.modules())


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps >= 0"):
        qat_finetune(_model(), torch.randn(2, 3, 64, 64), steps=-1)


def _stderr_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_cli_bad_qat_steps_one_line(capsys, tmp_path):
    out = str(tmp_path / "a.onnx")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--weights", "x", "--format", "onnx-int8", "--qat-steps", "-3", "-o", out])
    assert exit_info.value.code == 2 and "--qat-steps" in (line := _stderr_line(capsys)) and "'-3'" in line
    assert main(["export", "--weights", "x", "--qat-steps", "3", "-o", out]) == 2
    assert "only applies to --format onnx-int8" in _stderr_line(capsys)


def test_cli_qat_with_google_weights_one_line(shared_data, capsys, tmp_path):
    train, out = str(shared_data / "imagenette" / "train"), tmp_path / "q.onnx"
    argv = ["--weights", "mobilenet_v1_0.25_128_quant", "--calibration", train, "--calibration-images", "4"]
    assert main(["export", *argv, "--format", "onnx-int8", "--qat-steps", "5", "-o", str(out)]) == 2
    assert "Google's own" in _stderr_line(capsys) and not out.exists()


def test_cli_qat_export_compares_with_original_model(shared_data, capsys, tmp_path):
    train, out = str(shared_data / "imagenette" / "train"), tmp_path / "q.onnx"
    argv = ["--weights", "mobilenet_v1_0.25_128_quant", "--calibration", train, "--calibration-images", "8"]
    argv += ["--format", "onnx-int8", "--quantization", "calibrated", "--qat-steps", "2", "--json", "-o", str(out)]
    assert main(["export", *argv]) == 0
    report = json.loads(capsys.readouterr().out)
    assert out.is_file() and report["checked_on"] == "8 calibration images, calibrated quantization"
    model, info = load_weights("mobilenet_v1_0.25_128_quant")
    images = load_batch(calibration_files(train, 8), info.preprocessing)
    with torch.no_grad():  # the report measures the int8 file against the ORIGINAL float model
        diff = (OnnxModel(out, threads=1)(images) - model.eval()(images)).abs().max()
    assert report["max_abs_diff"] == pytest.approx(float(diff), abs=1e-5) and report["top1_agreement"] >= 0.5
