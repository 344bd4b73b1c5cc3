"""Dynamic batch and input size (the resolution multiplier rho, Section 3.4) through the
tools users already have: ``torch.export``, ``torch.jit.trace`` and ONNX.

TensorFlow SAME padding (Google's models) depends on the input size, so a trace or export
that froze it at the example's size would silently pad wrongly at other sizes; every test
checks against eager PyTorch at sizes other than the example's, odd ones included.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.deploy.common import export_program
from mobilenet_v1.model import MobileNetV1
from mobilenet_v1.weights import google_config

SIZES = [(3, 97, 113), (1, 224, 161), (2, 32, 33)]  # (batch, height, width): odd, non-square, the minimum


def _model(name: str) -> MobileNetV1:
    torch.manual_seed(0)
    if name == "google":
        model = MobileNetV1(google_config(0.25))
    else:
        model = mobilenet_v1(alpha=0.25, variant=name, num_classes=10)
    for m in model.modules():  # non-trivial biases and statistics so that every layer matters
        if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
            m.bias.data.uniform_(-0.3, 0.3)
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _check(fn, model: torch.nn.Module, sizes=SIZES) -> None:
    generator = torch.Generator().manual_seed(1)
    for n, h, w in sizes:
        x = torch.randn(n, 3, h, w, generator=generator)
        with torch.no_grad():
            torch.testing.assert_close(fn(x), model(x), atol=1e-5, rtol=1e-5, msg=f"at {n}x3x{h}x{w}")


@pytest.mark.parametrize("name", ["standard", "full-conv", "shallow", "google"])
def test_torch_export_dynamic_batch_and_size(name):
    """Batch in [1, 4096], height and width in [32, 4096], one program for all of them."""
    model = _model(name)
    program = export_program(model, 224, dynamic_size=True)
    ranges = sorted((int(r.lower), int(r.upper)) for r in program.range_constraints.values())
    assert ranges == [(1, 4096), (32, 4096), (32, 4096)]
    _check(program.module(), model)


def test_plain_torch_export_above_the_minimum_size():
    """A user's own ``torch.export`` call, without :func:`export_program`: dynamic sizes
    from 33 px (a 32 px input leaves a 1x1 map at stride 32, on which PyTorch's contiguity
    check specializes; ``export_program`` traces size-obliviously to keep 32)."""
    model = _model("google")
    dims = {
        0: torch.export.Dim("batch", min=1, max=256),
        2: torch.export.Dim("height", min=33, max=2048),
        3: torch.export.Dim("width", min=33, max=2048),
    }
    program = torch.export.export(model, (torch.randn(2, 3, 224, 224),), dynamic_shapes=(dims,))
    _check(program.module(), model, [(3, 97, 113), (1, 224, 161), (2, 33, 64)])


def test_plain_torch_export_from_32_px_size_obliviously():
    """From 32 px a user's own ``torch.export`` needs PyTorch's size-oblivious tracing (as
    :func:`export_program` uses): the 1x1 map at stride 32 is then not specialized on."""
    from torch.fx.experimental import _config as fx_config

    model = _model("standard")
    dims = {2: torch.export.Dim("h", min=32, max=512), 3: torch.export.Dim("w", min=32, max=512)}
    with fx_config.patch(backed_size_oblivious=True):
        program = torch.export.export(model, (torch.randn(2, 3, 64, 64),), dynamic_shapes=({0: None, **dims},))
    _check(program.module(), model, [(2, 32, 32), (2, 33, 97), (2, 224, 160)])


def test_jit_trace_of_same_padding_follows_the_input_size():
    """SAME pads are plain integer arithmetic on ``x.shape``, which the tracer records."""
    model = _model("google")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's deprecation notice; the input check is frozen (harmless)
        traced = torch.jit.trace(model, torch.randn(2, 3, 128, 128), check_trace=False)
    _check(traced, model, [(3, 97, 113), (1, 224, 161), (2, 129, 130)])


onnx_needed = pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript")),
    reason="onnx, onnxruntime and onnxscript are needed (pip install 'mobilenet-v1[export]')",
)


@pytest.fixture(scope="module")
def dynamic_file(tmp_path_factory):
    from mobilenet_v1.deploy.onnx import export_onnx

    path = tmp_path_factory.mktemp("dyn") / "google.onnx"
    report = export_onnx(
        _model("google"), path, Preprocessing(96), labels=[f"c{i}" for i in range(1001)], dynamic_size=True
    )
    return path, report


@onnx_needed
def test_onnx_dynamic_size_checked_at_other_sizes(dynamic_file):
    import onnx

    from mobilenet_v1.deploy.onnx import OnnxModel, check_sizes, read_metadata

    path, report = dynamic_file
    assert report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0
    assert check_sizes(96) == [(129, 73), (75, 97)]
    assert report.checked_on == "4 random inputs and 2 random at each of 129x73, 75x97"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    meta = read_metadata(path)
    assert meta["dynamic_size"] is True and meta["preprocessing"] == Preprocessing(96)
    _check(OnnxModel(path), _model("google"), [(3, 97, 113), (1, 224, 161), (2, 32, 33)])


@onnx_needed
def test_onnx_static_size_is_still_the_default(tmp_path):
    import onnx

    from mobilenet_v1.deploy.onnx import export_onnx, read_metadata

    path = tmp_path / "static.onnx"
    report = export_onnx(_model("google"), path, Preprocessing(64))
    assert report.checked_on == "4 random inputs"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 64, 64]
    assert "Pad" not in {n.op_type for n in proto.graph.node}  # SAME pads folded into the Convs
    assert read_metadata(path)["dynamic_size"] is False


@onnx_needed
def test_cli_export_dynamic_size(shared_data, tmp_path, capsys):
    from mobilenet_v1.cli import main
    from mobilenet_v1.deploy.onnx import OnnxModel, read_metadata
    from mobilenet_v1.weights import load_weights

    out = tmp_path / "g.onnx"
    argv = ["export", "--weights", "mobilenet_v1_0.25_128_quant", "--dynamic-size", "-o", str(out), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "onnx" and report["max_abs_diff"] <= 1e-4 and "161x97" in report["checked_on"]
    assert read_metadata(out)["dynamic_size"] is True
    model, _ = load_weights("mobilenet_v1_0.25_128_quant")
    _check(OnnxModel(out), model.eval(), [(2, 193, 201), (1, 224, 160)])


@onnx_needed
def test_cli_dynamic_size_with_int8_is_one_line_error(tmp_path, capsys):
    from mobilenet_v1.cli import main

    argv = ["export", "--weights", "mobilenet_v1_0.25_128_quant", "--format", "onnx-int8", "--dynamic-size"]
    assert main([*argv, "--calibration", str(tmp_path), "-o", str(tmp_path / "q.onnx")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--dynamic-size only applies to --format onnx" in lines[0], lines
    assert list(tmp_path.iterdir()) == []
