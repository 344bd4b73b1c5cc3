"""ExecuTorch (.pte, XNNPACK) and AOTInductor (.pt2) exports: each file is written, run by
its runtime and compared with PyTorch; ``eval/predict --model`` run it with the labels
and preprocessing it carries; bad input is one line and exit code 2, with no file left.

Small models (alpha 0.25 at 64 px) keep the exports to seconds; the latency targets are
measured by benchmarks/deploy/latency.py (docs/deployment.md).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import randomize_batch_norm, run_main

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.deploy import executorch
from mobilenet_v1.deploy.formats import FORMATS, export_as, load_exported
from mobilenet_v1.deploy.pt2 import BF16_TOLERANCE, GemmForm
from mobilenet_v1.weights import save_safetensors

pytest.importorskip("executorch", reason="the ExecuTorch tests need the 'mobile' extra")

RES = 64
LABELS = ["ant", "bee", "cat"]


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``mobilenet-v1 argv`` in this process: exit code, stdout and stderr."""
    from mobilenet_v1.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects a bad value before the subcommand runs
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _tiny(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_batch_norm(mobilenet_v1(alpha=0.25, num_classes=3, **kwargs)).eval()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mobile")
    meta = {"resolution": RES, "classes": LABELS}
    return save_safetensors(_tiny(), folder / "tiny.safetensors", meta)


@pytest.fixture(scope="module")
def val_folder(tmp_path_factory):
    """Three class folders of random JPEGs named by the checkpoint's own labels."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("val")
    generator = torch.Generator().manual_seed(0)
    for label in LABELS:
        (folder / label).mkdir()
        for i in range(2):
            pixels = torch.randint(0, 256, (80, 90, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / label / f"{i}.jpg")
    return folder


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"variant": "full-conv"}, {"variant": "shallow", "padding": "same", "activation": "relu6"}],
    ids=["standard", "full-conv", "shallow-same-relu6"],
)
def test_gemm_form_computes_the_model(kwargs):
    """The pt2 package's NHWC GEMM form (1x1 convs as addmm, depthwise as nine shifted
    multiply-adds, SAME pads) gives the model's logits, at an odd non-square size too."""
    model = _tiny(**kwargs)
    x = torch.randn(2, 3, 67, 64)
    with torch.no_grad():
        ref = model(x)
        assert (GemmForm(model)(x) - ref).abs().max() < 1e-5
        bf16 = GemmForm(model, torch.bfloat16)(x)
    assert bf16.dtype == torch.float32
    assert (bf16 - ref).abs().max() <= BF16_TOLERANCE * ref.abs().max()


def test_executorch_fp32_and_int8_run_under_the_runtime(tiny_checkpoint, val_folder, tmp_path, capsys):
    """``export --format executorch``: fp32 matches PyTorch to 1e-4 at any batch (chunked
    past the planned maximum), labels and preprocessing travel, ``eval --model`` runs it;
    int8 (PT2E, XNNPACK quantizer) agrees with the float model."""
    model, pre = _tiny(), Preprocessing(RES)
    out = tmp_path / "m.pte"
    code, stdout, err = _cli(
        ["export", "--weights", str(tiny_checkpoint), "--format", "executorch", "-o", str(out)], capsys
    )
    assert code == 0 and "(executorch)" in stdout, err
    runtime, info = load_exported(out)
    assert info.classes == LABELS and info.preprocessing == pre
    x = torch.randn(20, 3, RES, RES)  # more than MAX_BATCH: two chunks
    with torch.no_grad():
        assert (runtime(x) - model(x)).abs().max() <= 1e-4
    code, stdout, err = _cli(["eval", str(val_folder), "--json", "--workers", "0", "--model", str(out)], capsys)
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["count"] == 6, err
    calibration = torch.rand(8, 3, RES, RES) * 2 - 1
    int8 = export_as("executorch-int8", model, tmp_path / "q.pte", pre, labels=LABELS, calibration=calibration)
    assert int8.format == "executorch-int8" and int8.top1_agreement >= 0.75, int8
    quantized, _ = load_exported(tmp_path / "q.pte")
    with torch.no_grad():
        logits = model(calibration)
    assert (quantized(calibration) - logits).abs().max() < 0.25 * float(logits.max() - logits.min())
    with pytest.raises(ValueError, match="needs calibration"):
        export_as("executorch-int8", model, tmp_path / "none.pte", pre)
    assert not (tmp_path / "none.pte").exists()


def test_executorch_int8_quantizes_relu6_after_the_activation(shared_data, monkeypatch):
    """Google's 0.25/128 (ReLU6, SAME) through the int8 path's PT2E graph (what XNNPACK
    then computes): each ReLU6 has its own int8 grid over at most [0, 6], not its
    convolution's wider pre-activation grid, and the logits on real photos stay within
    13% RMS of float (XNNPACK's quantizer alone: 18%)."""
    from mobilenet_v1.deploy.executorch import _Lowerable, _quantize
    from mobilenet_v1.deploy.quantize import calibration_files, load_batch
    from mobilenet_v1.fold import fuse_bn
    from mobilenet_v1.weights import load_weights

    imagenette = shared_data / "imagenette"
    if not (shared_data / "pretrained" / "mobilenet_v1_0.25_128_quant.tflite").is_file() or not imagenette.is_dir():
        pytest.skip("shared data has no mobilenet_v1_0.25_128_quant.tflite or imagenette/")
    monkeypatch.setenv("MOBILENET_V1_DATA", str(shared_data))
    model, info = load_weights("mobilenet_v1_0.25_128_quant")
    folded = _Lowerable(fuse_bn(model)).eval()
    calibration = load_batch(calibration_files(imagenette / "train", 16), info.preprocessing)
    quantized = _quantize(folded, calibration, (), [])  # every layer calibrated
    relu6 = [n for n in quantized.graph.nodes if n.target == torch.ops.aten.hardtanh_.default]
    assert len(relu6) == 27 and all(n.args[0].target == torch.ops.aten.conv2d.default for n in relu6)
    for node in relu6:
        (quantize,) = node.users
        scale, zero_point = quantize.args[1:3]
        assert zero_point == -128 and scale * 255 <= 6 * (1 + 1e-6), (node, scale, zero_point)
    photos = load_batch(calibration_files(imagenette / "val", 16), info.preprocessing)
    with torch.no_grad():
        ref, out = folded(photos), quantized(photos)
    assert (out - ref).pow(2).mean().sqrt() < 0.13 * ref.std()


def test_cli_pt2_export_then_eval_and_predict(tiny_checkpoint, val_folder, tmp_path, capsys):
    """``export --format pt2`` writes a package that ``aoti_load_package`` loads, with a
    dynamic batch; ``eval --model``/``predict --model`` give what the checkpoint gives."""
    out = tmp_path / "m.pt2"
    code, err = run_main(
        ["export", "--weights", str(tiny_checkpoint), "--format", "pt2", "-o", str(out), "--json"], capsys
    )
    assert code == 0, err
    package = torch._inductor.aoti_load_package(str(out))
    model = _tiny()
    for batch in (1, 5):
        x = torch.randn(batch, 3, RES, RES)
        with torch.no_grad():
            assert (package(x) - model(x)).abs().max() <= 1e-4
    # a package is native code: without the opt-in it is refused in one line, nothing run
    code, stdout, err = _cli(["eval", str(val_folder), "--workers", "0", "--model", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--trust-native-code" in err, err
    trusted = ["--model", str(out), "--trust-native-code"]
    results = []
    for source in (trusted, ["--weights", str(tiny_checkpoint)]):
        code, stdout, err = _cli(["eval", str(val_folder), "--json", "--workers", "0", *source], capsys)
        assert code == 0, err
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert results[0]["top1"] == results[1]["top1"] and results[0]["per_class"] == results[1]["per_class"]
    image = str(next(val_folder.glob("ant/*.jpg")))
    predictions = []
    for source in (trusted, ["--weights", str(tiny_checkpoint)]):
        code, stdout, err = _cli(["predict", image, "--json", "--topk", "3", *source], capsys)
        assert code == 0, err
        predictions.append(json.loads(stdout)["predictions"][image])
    assert [p["label"] for p in predictions[0]] == [p["label"] for p in predictions[1]]


@pytest.mark.slow
def test_pt2_bf16_package(tmp_path):
    """bfloat16 weights and activations inside, float32 in and out, within tolerance."""
    model = _tiny()
    report = export_as("pt2-bf16", model, tmp_path / "b.pt2", Preprocessing(RES), labels=LABELS)
    assert report.format == "pt2-bf16" and report.top1_agreement >= 0.75
    runtime, info = load_exported(tmp_path / "b.pt2", trust_native_code=True)
    x = torch.randn(3, 3, RES, RES)
    with torch.no_grad():
        ref = model(x)
    assert info.classes == LABELS
    assert (runtime(x) - ref).abs().max() <= BF16_TOLERANCE * ref.abs().max()


def _bad_files(tmp_path):
    garbage = tmp_path / "garbage.pte"
    garbage.write_bytes(b"\x00" * 64)
    fake_header = tmp_path / "fake.pte"
    fake_header.write_bytes(b"\x00\x00\x00\x00ET12" + os.urandom(200))
    not_zip = tmp_path / "x.pt2"
    not_zip.write_bytes(b"not a zip file at all")
    import zipfile

    empty_zip = tmp_path / "empty.pt2"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return {
        garbage: "no 'ET12' file identifier",
        fake_header: "no integrity seal",
        not_zip: "not a pt2 package",
        empty_zip: "no compiled model inside",
        tmp_path / "model.bin": "must end in .onnx, .tflite, .pte, .pt2",
    }


def test_files_that_are_not_programs_are_one_line(tmp_path, val_folder, capsys):
    """A .pte/.pt2 that is not one: ``ValueError`` from the API, one line and exit 2 from
    ``eval --model``, nothing from the runtime's own logging on stderr."""
    for path, needle in _bad_files(tmp_path).items():
        with pytest.raises(ValueError, match=needle):
            load_exported(path)
        code, err = run_main(["eval", str(val_folder), "--workers", "0", "--model", str(path)], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and needle in lines[0], err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--format", "coreml", "-o", "{d}/m.pte"], "invalid choice: 'coreml'"),
        (["--format", "executorch", "-o", "{d}"], "is a directory"),
        (["--format", "pt2", "-o", "/dev/null"], "not a regular file"),
        (["--format", "pt2", "-o", "{d}/m.onnx"], "writes a .pt2 file"),
        (["--format", "executorch-int8", "-o", "{d}/m.pte"], "needs --calibration"),
        (["--format", "pt2-bf16", "--calibration", "{d}", "-o", "{d}/m.pt2"], "--calibration only applies"),
    ],
)
def test_cli_export_bad_input(tiny_checkpoint, tmp_path, capsys, args, needle):
    before = sorted(tmp_path.iterdir())
    argv = ["export", "--weights", str(tiny_checkpoint), *(a.format(d=tmp_path) for a in args)]
    code, err = run_main(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert sorted(tmp_path.iterdir()) == before


def test_missing_extra_names_the_pip_extra(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """Without ExecuTorch installed the export is one line naming ``mobilenet-v1[mobile]``."""
    import builtins

    real_import = builtins.__import__

    def no_executorch(name, globals=None, locals=None, fromlist=(), level=0):
        if name.startswith("executorch") and level == 0:  # the package, not our deploy.executorch
            raise ImportError(f"No module named {name!r}")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_executorch)
    out = tmp_path / "m.pte"
    code, err = run_main(
        ["export", "--weights", str(tiny_checkpoint), "--format", "executorch", "-o", str(out)], capsys
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "pip install 'mobilenet-v1[mobile]'" in lines[0], err
    assert not out.exists()


def test_every_format_has_a_runtime():
    assert set(FORMATS.values()) == {".onnx", ".tflite", ".pte", ".pt2"}
    with pytest.raises(ValueError, match="unknown fmt='coreml'"):
        export_as("coreml", _tiny(), "m.mlmodel", Preprocessing(RES))


def test_a_program_damaged_after_export_is_refused_by_its_seal(tmp_path, capsys):
    """Every byte of an exported program is covered by the sha256 the export appends: a
    flipped bit (which can abort the runtime inside its Python bindings) or a cut is one
    line, before the runtime parses anything."""
    path = tmp_path / "m.pte"
    export_as("executorch", _tiny(), path, Preprocessing(RES), labels=LABELS)
    data = path.read_bytes()
    for name, damaged, needle in (
        ("flipped.pte", data[:1000] + bytes([data[1000] ^ 0x40]) + data[1001:], "its sha256 does not match the seal"),
        ("unsealed.pte", data[: -len(executorch.SEAL) - 32], "no integrity seal"),
        ("cut.pte", data[: len(data) // 2], "no integrity seal"),
    ):
        (tmp_path / name).write_bytes(damaged)
        with pytest.raises(ValueError, match=needle):
            load_exported(tmp_path / name)
