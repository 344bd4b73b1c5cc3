"""ONNX export, int8 quantization, eval --model and the fast PyTorch path."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import mobilenet_v1.deploy.onnx as onnx_module
from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.cli import main
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.deploy.compiled import compile_for_inference
from mobilenet_v1.deploy.onnx import OnnxModel, export_onnx, fuse_bn, onnx_session, read_metadata
from mobilenet_v1.deploy.quantize import calibration_files, load_batch, quantize_onnx

GOOGLE = "mobilenet_v1_0.25_128_quant"


def _bn_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = mobilenet_v1(alpha=0.25, activation="relu6", padding="same", num_classes=10)
    for m in model.modules():  # non-trivial statistics so that folding has work to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def fp32_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "bn.onnx"
    report = export_onnx(_bn_model(), path, Preprocessing(96), labels=[f"c{i}" for i in range(10)])
    return path, report


def test_fuse_bn_is_exact_and_removes_bn():
    model = _bn_model()
    folded = fuse_bn(model)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)
    assert folded.config.folded_bn and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def test_fp32_export_numerics_dynamic_batch_and_metadata(fp32_file):
    path, report = fp32_file
    assert report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0
    meta = read_metadata(path)
    assert meta["preprocessing"] == Preprocessing(96) and meta["labels"][3] == "c3" and meta["format"] == "onnx"
    assert meta["config"]["alpha"] == 0.25 and meta["config"]["folded_bn"] is True
    onnx = OnnxModel(path)
    x = torch.randn(5, 3, 96, 96)  # a batch size never seen at export
    with torch.no_grad():
        torch.testing.assert_close(onnx(x), _bn_model()(x), atol=1e-4, rtol=1e-4)
    assert not list(path.parent.glob(".*.partial*"))


def test_failed_numerics_check_leaves_no_file(tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(ValueError, match="differs from PyTorch"):
        export_onnx(_bn_model(), out, Preprocessing(96), tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_int8_calibrated_export(fp32_file, shared_data, tmp_path):
    path, _ = fp32_file
    files = calibration_files(shared_data / "imagenette" / "train", 8)
    assert len(files) == 8 and len({f.parent.name for f in files}) > 1
    out = tmp_path / "int8.onnx"
    report = quantize_onnx(path, out, load_batch(files, Preprocessing(96)), reference=fuse_bn(_bn_model()))
    assert report.format == "onnx-int8" and np.isfinite(report.max_abs_diff)
    meta = read_metadata(out)
    assert meta["format"] == "onnx-int8" and meta["quantization"] == "calibrated" and meta["labels"][0] == "c0"
    session = onnx_session(out)
    ops = {n.op_type for n in __import__("onnx").load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert session.run(None, {"input": np.zeros((3, 3, 96, 96), np.float32)})[0].shape == (3, 10)


def test_cli_google_int8_and_eval_model(shared_data, tmp_path, capsys):
    out = tmp_path / "g.onnx"
    train = str(shared_data / "imagenette" / "train")
    argv = ["export", "--weights", GOOGLE, "--format", "onnx-int8", "--calibration", train, "--calibration-images", "8"]
    assert main([*argv, "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "onnx-int8" and "tflite quantization" in report["checked_on"]
    assert report["top1_agreement"] >= 0.75  # int8 vs float on the calibration images
    meta = read_metadata(out)
    assert meta["labels"][0] == "background" and meta["preprocessing"].resolution == 128
    subset = tmp_path / "val"
    for wnid in ("n01440764", "n03888257"):
        (subset / wnid).mkdir(parents=True)
        for f in sorted((shared_data / "imagenette" / "val" / wnid).iterdir())[:4]:
            (subset / wnid / f.name).symlink_to(f)
    assert main(["eval", str(subset), "--model", str(out), "--json", "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        result["count"] == 8 and 0 <= result["top1"] <= 100 and set(result["per_class"]) == {"n01440764", "n03888257"}
    )


def test_compile_for_inference_matches_eager():
    model = _bn_model()
    fast = compile_for_inference(model, 96, backend="jit")
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="backend"):
        compile_for_inference(model, backend="tensorrt")


def test_compile_for_inference_bfloat16_close_to_float():
    model = _bn_model()
    x = torch.randn(4, 3, 96, 96)
    with torch.inference_mode():
        ref = model(x)
        for backend in ("eager", "jit"):
            out = compile_for_inference(model, 96, backend=backend, dtype=torch.bfloat16)(x)
            assert out.dtype == torch.float32  # logits come back in float32
            assert (out - ref).abs().max() < 0.05 * ref.abs().max()  # bf16 keeps ~3 significant digits
            assert not torch.equal(out, ref)  # it did run in bfloat16
    with pytest.raises(ValueError, match="dtype"):
        compile_for_inference(model, dtype=torch.float16)


def test_calibration_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="calibration folder not found"):
        calibration_files(tmp_path / "missing", 4)
    with pytest.raises(ValueError, match="no images"):
        calibration_files(tmp_path, 4)


def test_truncated_model_is_one_line_error(fp32_file, tmp_path):
    path, _ = fp32_file
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="cannot load ONNX model"):
        OnnxModel(cut)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--format", "tflite"], "format"),
        (["--format", "onnx-int8"], "--calibration"),
        (["--format", "onnx-int8", "--calibration", "{empty}"], "no images"),
        (["--format", "onnx", "-o", "{missing}/m.onnx"], "output folder does not exist"),
        (["--format", "onnx", "-o", "{empty}"], "directory"),
    ],
)
def test_export_bad_input_one_line_exit_2(extra, needle, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(empty=empty, missing=tmp_path / "missing") for a in extra]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out.onnx")]
    try:
        code = main(["export", "--weights", GOOGLE, *args])
    except SystemExit as exc:  # argparse rejects unknown choices itself
        code = exc.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and not list(empty.iterdir())


def test_eval_truncated_model_one_line_exit_2(fp32_file, tmp_path):
    path, _ = fp32_file
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[:1000])
    (tmp_path / "val" / "n01440764").mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-m", "mobilenet_v1", "eval", str(tmp_path / "val"), "--model", str(cut)],
        capture_output=True,
        text=True,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cannot load ONNX model" in lines[0], proc.stderr


def test_google_int8_keeps_googles_weight_grid_per_channel(shared_data, tmp_path):
    """Google's uint8 conv grids become symmetric per-channel int8 (ORT's fast kernels) with
    the same values wherever a channel's steps fit in [-127, 127] (the classifier's stays
    per tensor: tests/deploy/test_quantize.py)."""
    import onnx
    from onnx import numpy_helper

    from mobilenet_v1.deploy.quantize import tflite_overrides
    from mobilenet_v1.weights import load_weights
    from mobilenet_v1.weights.grids import Int8Grids

    model, info = load_weights(GOOGLE)
    fp32, int8 = tmp_path / "f.onnx", tmp_path / "q.onnx"
    export_onnx(model, fp32, info.preprocessing)
    files = calibration_files(shared_data / "imagenette" / "train", 4)
    overrides = tflite_overrides(fp32, Int8Grids.read(info.record.files()))
    quantize_onnx(fp32, int8, load_batch(files, info.preprocessing), overrides=overrides)
    floats = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(fp32)).graph.initializer}
    graph = onnx.load(str(int8)).graph
    ints = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    exact = total = layers = 0
    for node in graph.node:
        q = ints.get(node.input[0])
        if node.op_type != "DequantizeLinear" or q is None or q.dtype != np.int8 or q.ndim != 4:
            continue
        scale, zero = ints[node.input[1]], ints[node.input[2]]
        assert scale.shape == (len(q),) and not zero.any()  # per output channel, symmetric
        source = floats[node.output[0].removesuffix("_DequantizeLinear_Output")]
        values = q.astype(np.float32) * scale.reshape(-1, *[1] * (q.ndim - 1))
        same = np.isclose(values, source, rtol=0, atol=1e-7).reshape(len(q), -1).all(axis=1)
        exact, total, layers = exact + same.sum(), total + len(q), layers + 1
    assert layers == 25  # 25 quantized convs (2 stay float)
    assert exact / total > 0.97, f"only {exact} of {total} channels keep Google's grid"


@pytest.mark.parametrize(
    ("env", "idle", "spins"),
    [
        ("1", 0.0, True),
        ("0", 2.0, False),
        (None, 2.0, True),
        (None, 1.6, True),
        (None, 1.0, False),
        (None, None, False),
    ],
)
def test_ort_spin_follows_flag_then_idle_cores(monkeypatch, env, idle, spins):
    # Spinning pays on idle cores and costs beside a busy process (docs/deployment.md):
    # the environment forces it, otherwise idle cores (within half a core) decide.
    if env is None:
        monkeypatch.delenv(onnx_module.SPIN_ENV, raising=False)
    else:
        monkeypatch.setenv(onnx_module.SPIN_ENV, env)
    monkeypatch.setattr(onnx_module, "idle_cores", lambda seconds=0.1: idle)
    assert onnx_module.ort_spin(2) is spins
    assert onnx_module.ort_spin_setting() == {"1": "on", "0": "off", None: "auto"}[env]


def test_onnx_model_records_and_applies_spin(fp32_file, monkeypatch):
    monkeypatch.setattr(onnx_module, "idle_cores", lambda seconds=0.1: 0.0)  # a busy machine
    monkeypatch.delenv(onnx_module.SPIN_ENV, raising=False)
    model = OnnxModel(fp32_file[0], 2, metadata=False)
    assert model.spin is False
    assert model.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    forced = OnnxModel(fp32_file[0], 2, spin=True, metadata=False)
    assert forced.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_idle_cores_reads_proc_stat():
    idle = onnx_module.idle_cores(0.05)
    if idle is None:
        pytest.skip("no /proc/stat on this system")
    assert 0.0 <= idle <= (os.cpu_count() or 1) + 1e-6
